"""Delivering one batch: record its refusals, POST with retries, split on rejection, and record every outcome.

Transient failures (no answer, 408, 429, 5xx) are retried by the one retry loop of every HTTP call
(engine/http/retry.py). A 400/413/422 means the content was refused: the batch is halved and each
half sent on its own, down to single records, so the good records go through and each bad one is
isolated; halving stops when both halves are refused alike or the batch has cost
`max_calls_per_batch` calls. Only an answer that `Acknowledgement` accepts tracks records. Every
attempt is logged.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from sync_pipeline.engine.audit.scheduler_log import ApiCall
from sync_pipeline.engine.batching import Batch
from sync_pipeline.engine.http.api import (
    REJECTING_STATUSES,
    TOO_LARGE,
    Acknowledgement,
    ApiResponse,
    BatchPoster,
    NotAcknowledged,
    RecordByRecord,
    Verdict,
    idempotency_key,
)
from sync_pipeline.engine.http.retry import Attempt, RetryPolicy, call_with_retries
from sync_pipeline.engine.mapping.payload import PayloadError, Record, encode_batch, explain_unencodable
from sync_pipeline.engine.state.tracking import Rejection, TrackingStore

MAX_REJECTED_IDS_SHOWN = 20
ACKNOWLEDGED_BY_DEFAULT = Acknowledgement()
"""200, 201, 202 or 204 with a JSON body (or none): the settings' default."""


class EndpointUnreachable(Exception):
    """The endpoint could not be reached on any attempt: the entity stops."""


class CredentialsRefused(EndpointUnreachable):
    """The receiver refused the caller's credentials: the entity stops, and trying again soon will not help."""


@dataclass
class DeliveryCounts:
    """What delivery did for one entity, across all its batches."""

    sent: int = 0
    failed: int = 0
    rejected: int = 0
    batches_ok: int = 0
    batches_failed: int = 0
    api_calls: int = 0
    retries: int = 0
    first_error: str | None = None
    rejected_ids: list[str] = field(default_factory=list)


class Refusals:
    """Keeps a sender's refused (and, for a per-record sink, failed) records in TB_R_SYNC_REJECTED and counts them,
    from any of its threads; with `max_attempts`, a record failing that many runs is dead-lettered."""

    def __init__(
        self,
        tracking: TrackingStore,
        entity: str,
        counts: DeliveryCounts,
        counting: threading.Lock,
        log: logging.Logger,
        max_attempts: int | None = None,
    ) -> None:
        self._tracking = tracking
        self._entity = entity
        self._counts = counts
        self._counting = counting
        self._rejecting = threading.Lock()  # TB_R_SYNC_REJECTED is read, then written: one batch at a time
        self._log = log
        self._max_attempts = max_attempts

    def record(self, rejections: Sequence[Rejection], rows: int | None = None) -> None:
        """Keep the refusals; `rows` is how many source rows they stand for, when not one each."""
        if not rejections:
            return
        self.queue(rejections)
        with self._counting:
            self._counts.rejected += len(rejections) if rows is None else rows
            room = MAX_REJECTED_IDS_SHOWN - len(self._counts.rejected_ids)
            self._counts.rejected_ids.extend(r.entity_id for r in rejections[: max(room, 0)])
        self._log.warning(f"{self._entity}: {len(rejections)} record(s) refused, e.g. {rejections[0].describe()}")

    def queue(self, failures: Sequence[Rejection], may_die: bool = True) -> None:
        """Keep records in the retry queue, one more attempt each, without counting them as refused (a failed
        call is counted as failed by its sender); those reaching `max_attempts` are dead-lettered, and logged,
        unless `may_die` is False (nothing shows the receiver up yet: their count grows, their turn waits)."""
        with self._rejecting:  # the lock keeps other runs out, not this run's own sender threads
            limit = self._max_attempts if may_die else None
            dead = self._tracking.record_rejected(self._entity, failures, limit)
        if dead:
            self._log.error(
                f"{self._entity}: {len(dead)} record(s) dead-lettered after {self._max_attempts} failed runs, no "
                f"longer sent until `sync-pipeline resend` re-queues them, e.g. {dead[0].describe()}"
            )


class _Settled(Protocol):
    @property
    def call(self) -> ApiCall: ...


SettledT = TypeVar("SettledT", bound=_Settled)


class AuditedCalls:
    """A sender's calls through the one retry loop: each attempt counted and, when it failed, written to
    SchedulerLog at once; a call whose every attempt found the endpoint unreachable stops the entity."""

    def __init__(
        self,
        tracking: TrackingStore,
        entity: str,
        retry: RetryPolicy,
        counts: DeliveryCounts,
        counting: threading.Lock,
        before_each_attempt: Callable[[], None],
        sleep: Callable[[float], None],
    ) -> None:
        self._tracking = tracking
        self._entity = entity
        self._retry = retry
        self._counts = counts
        self._counting = counting
        self._before_each_attempt = before_each_attempt
        self._sleep = sleep
        self._rng = random.Random()

    def call(self, send: Callable[[], ApiResponse], settle: Callable[[Attempt], SettledT]) -> SettledT:
        """The last attempt, as `settle` reads it (its call logged by the caller when it succeeded)."""
        settled: list[SettledT] = []

        def attempt() -> ApiResponse:
            self._before_each_attempt()
            return send()

        def record(outcome: Attempt) -> None:
            result = settle(outcome)
            settled.append(result)
            with self._counting:
                self._counts.api_calls += 1
            if not result.call.ok:
                self._tracking.record_call(self._entity, result.call)

        last = call_with_retries(attempt, self._retry, record, self._sleep, self._rng)
        with self._counting:
            self._counts.retries += last.number - 1
        if last.unreachable:
            raise EndpointUnreachable(settled[-1].call.error)
        return settled[-1]


@dataclass(frozen=True)
class _Answer:
    """What one attempt means for the batch: its SchedulerLog call, the response excerpt, the verdict."""

    call: ApiCall
    excerpt: str = ""
    verdict: Verdict | None = None  # set when the call got an acknowledgement


@dataclass(frozen=True)
class _Refused:
    """A part of a batch the API refused as a whole (400/413/422), as it was sent."""

    entity_ids: list[str]
    records: list[Record]
    status: int
    excerpt: str

    def alike(self, other: _Refused) -> bool:
        """Refused for the same reason; a 413 is about size, so two halves too large say nothing about content."""
        return self.status != TOO_LARGE and (self.status, self.excerpt) == (other.status, other.excerpt)


@dataclass
class _CallBudget:
    """The API calls one batch may still cost, its halves and retries included."""

    left: int


class BatchSender:
    """Sends an entity's batches and records the outcome of every call in the Log database.

    `send` may run on several threads at once (batches in flight); the counts are shared.
    """

    def __init__(
        self,
        entity: str,
        endpoint_url: str,
        api: BatchPoster,
        tracking: TrackingStore,
        retry: RetryPolicy,
        max_split_depth: int,
        log: logging.Logger,
        before_each_attempt: Callable[[], None] = lambda: None,
        refresh_tracking: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        acknowledgement: Acknowledgement = ACKNOWLEDGED_BY_DEFAULT,
        max_calls_per_batch: int = 100,
    ) -> None:
        self.entity = entity
        self.endpoint_url = endpoint_url
        self.counts = DeliveryCounts()
        self._counting = threading.Lock()  # batches may be sent from several threads at once
        self._refusals = Refusals(tracking, entity, self.counts, self._counting, log)
        self._calls = AuditedCalls(tracking, entity, retry, self.counts, self._counting, before_each_attempt, sleep)
        self._api = api
        self._tracking = tracking
        self._max_split_depth = max_split_depth
        self._log = log
        self._refresh_tracking = refresh_tracking
        self._acknowledgement = acknowledgement
        self._max_calls_per_batch = max_calls_per_batch

    def send(self, batch: Batch) -> None:
        """Record the rows refused before this batch, then deliver its records (built and checked already)."""
        self._refusals.record(batch.refused, batch.refused_rows)
        if batch.records:
            self._deliver(batch.entity_ids, batch.records, depth=0)

    def _deliver(self, entity_ids: list[str], records: list[Record], depth: int) -> None:
        budget = _CallBudget(self._max_calls_per_batch)
        refused = self._send_part(entity_ids, records, budget)
        if refused is not None:
            if refused.status == TOO_LARGE and len(refused.entity_ids) > 1:
                self._log.warning(
                    f"{self.entity}: HTTP 413 Payload Too Large for {len(refused.entity_ids)} records: sending "
                    f"them in halves; lower entities.{self.entity}.batch_size to avoid the extra calls"
                )
            self._split(refused, depth, budget)

    def _send_part(self, entity_ids: list[str], records: list[Record], budget: _CallBudget) -> _Refused | None:
        """Post one batch or part of one; track, reject or fail it, or return its refusal to be split."""
        try:
            body = encode_batch(records)
        except PayloadError:
            entity_ids, records = self._drop_unencodable(entity_ids, records)
            if not entity_ids:
                return None
            body = encode_batch(records)
        try:
            answer = self._post_with_retries(entity_ids, body, budget)
        except EndpointUnreachable as exc:
            self._count_failed(entity_ids, str(exc))
            raise
        call = answer.call
        if isinstance(answer.verdict, RecordByRecord):
            self._settle_record_by_record(entity_ids, call, answer.verdict)
            return None
        if answer.verdict is not None:
            self._track(entity_ids, call)
            return None
        if call.http_status in REJECTING_STATUSES:
            return _Refused(entity_ids, records, call.http_status, answer.excerpt)
        self._fail(entity_ids, call)
        return None

    def _split(self, refused: _Refused, depth: int, budget: _CallBudget) -> None:
        """Halve a refused part to isolate the records the API refuses, while halving can still tell them apart."""
        if len(refused.entity_ids) == 1:
            self._reject_refused(refused)
            return
        if depth >= self._max_split_depth:
            self._reject_refused(refused, f"not split further: rejections.max_split_depth {self._max_split_depth}")
            return
        if budget.left < 2:
            self._reject_refused(
                refused, f"not split further: rejections.max_calls_per_batch {self._max_calls_per_batch} reached"
            )
            return
        half = len(refused.entity_ids) // 2
        ids, records = refused.entity_ids, refused.records
        first = self._send_part(ids[:half], records[:half], budget)
        second = self._send_part(ids[half:], records[half:], budget)
        if first is not None and second is not None and first.alike(second):
            note = f"both halves of {len(ids)} records refused alike, not split further"
            self._reject_refused(first, note)
            self._reject_refused(second, note)
            return
        for part in (first, second):
            if part is not None:
                self._split(part, depth + 1, budget)

    def _reject_refused(self, refused: _Refused, note: str = "") -> None:
        reason = f"rejected by the API: HTTP {refused.status}"
        if refused.status == TOO_LARGE and len(refused.entity_ids) == 1:
            reason += " Payload Too Large: this record alone is too large for the API"
        if note:
            reason += f" ({note})"
        self._refusals.record([Rejection(i, refused.status, reason, refused.excerpt) for i in refused.entity_ids])

    def _track(self, entity_ids: list[str], call: ApiCall) -> None:
        self._tracking.record_delivered(self.entity, entity_ids, call, refresh=self._refresh_tracking)
        with self._counting:
            self.counts.sent += len(entity_ids)
            self.counts.batches_ok += 1

    def _fail(self, entity_ids: list[str], call: ApiCall) -> None:
        self._count_failed(entity_ids, call.error or "")
        self._log.error(
            f"{self.entity}: {len(entity_ids)} records ({entity_ids[0]}..{entity_ids[-1]}) failed after "
            f"{call.attempt} attempt(s), left for the next run: {call.error}"
        )

    def _settle_record_by_record(self, entity_ids: list[str], call: ApiCall, verdict: RecordByRecord) -> None:
        """A per-record answer: track what it acknowledged, reject what it refused, fail what it left out."""
        if verdict.acknowledged:
            self._track(verdict.acknowledged, call)
        else:
            self._tracking.record_call(
                self.entity, replace(call, error=f"HTTP {call.http_status}: none of {len(entity_ids)} acknowledged")
            )
        reason = f"rejected by the API: HTTP {call.http_status}, its result for this record is not an acceptance"
        refused = [Rejection(i, call.http_status, reason, excerpt) for i, excerpt in verdict.refused.items()]
        self._refusals.record(refused)
        if verdict.unanswered:
            self._fail(
                verdict.unanswered,
                replace(call, error=f"HTTP {call.http_status}: no result for {len(verdict.unanswered)} record(s)"),
            )

    def _count_failed(self, entity_ids: list[str], error: str) -> None:
        with self._counting:
            self.counts.failed += len(entity_ids)
            self.counts.batches_failed += 1
            self.counts.first_error = self.counts.first_error or error

    def _drop_unencodable(self, entity_ids: list[str], records: list[Record]) -> tuple[list[str], list[Record]]:
        """Find, one by one, the records that cannot be encoded; refuse them and keep the rest."""
        keep_ids: list[str] = []
        keep: list[Record] = []
        refused: list[Rejection] = []
        for entity_id, record in zip(entity_ids, records, strict=True):
            try:
                encode_batch([record])
            except PayloadError:
                refused.append(Rejection(entity_id, None, f"not sent: {explain_unencodable(record)}"))
                continue
            keep_ids.append(entity_id)
            keep.append(record)
        self._refusals.record(refused)
        return keep_ids, keep

    def _post_with_retries(self, entity_ids: list[str], body: bytes, budget: _CallBudget) -> _Answer:
        """The final attempt's answer (its call logged by the caller when it was acknowledged); every
        other attempt is logged as a failure as it happens."""
        key = idempotency_key(self.entity, entity_ids, body)

        def settle(attempt: Attempt) -> _Answer:
            budget.left -= 1
            return self._answer(attempt, entity_ids)

        return self._calls.call(lambda: self._api.post_batch(self.endpoint_url, body, key), settle)

    def _answer(self, attempt: Attempt, entity_ids: list[str]) -> _Answer:
        """The SchedulerLog call of an attempt and, for a 2xx, whether it acknowledged the batch."""

        def call(status: int | None, error: str | None) -> ApiCall:
            duration_ms = round(attempt.seconds * 1000)
            return ApiCall(self.endpoint_url, len(entity_ids), status, duration_ms, error, attempt.number)

        response = attempt.response
        if response is None:
            prefix = "endpoint unreachable" if attempt.unreachable else "no response"
            return _Answer(call(None, f"{prefix}: {attempt.failure}"))
        excerpt = response.body_excerpt
        if response.is_2xx:
            verdict = self._acknowledgement.judge(response, entity_ids)
            if isinstance(verdict, NotAcknowledged):  # the same page would come back: not retried
                return _Answer(call(response.status_code, verdict.reason), excerpt)
            return _Answer(call(response.status_code, None), verdict=verdict)
        return _Answer(call(response.status_code, f"HTTP {response.status_code}: {excerpt}"), excerpt)
