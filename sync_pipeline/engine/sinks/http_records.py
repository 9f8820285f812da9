"""Delivering records one by one: POST the new ones, PUT (or PATCH) the changed ones at their external id.

Each change is one call through the one retry loop of every HTTP call (engine/http/retry.py): the
same transient statuses, Retry-After and bounds, one SchedulerLog row per attempt. A 2xx that
`Acknowledgement` accepts keeps the record's row hash and external id (a create's is read from its
answer at `id_field`) in TB_R_SYNC_ROW_HASH, in the same transaction as the call's SchedulerLog row
(and the removal of its TB_R_SYNC_REJECTED row, if an earlier run's failed), so a crash cannot
leave one without the other. A 400/413/422 rejects that record (TB_R_SYNC_REJECTED); any other failure
(5xx or no answer after the retries) leaves its row hash as it was, so it is sent again next run, and is
counted in the same retry queue; the others go on. A record that failed `max_attempts` runs is
dead-lettered there and no longer sent (engine/changes.py leaves it out) until it is re-queued by hand.

Duplicates: a create carries an Idempotency-Key made of the entity, the EntityId and the exact body,
so a retried create whose answer was lost, or the next run's create of the same content (after a 2xx
without an id), is the same request to a receiver that honours the header. A receiver that takes the
id from us (Praxedo's `createEvents`) answers such a create 409 Conflict instead. With `on_conflict:
update` that means "created already, under our id" (by hand, or by a run killed between the answer and
the row hash write): the record is adopted, updated at the id it carries, and never created twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import sqlalchemy as sa

from sync_pipeline.engine.audit.scheduler_log import ApiCall, SchedulerLogWriter
from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.http.api import (
    REJECTING_STATUSES,
    Acknowledgement,
    ApiResponse,
    NotAcknowledged,
    RecordRequester,
    idempotency_key,
)
from sync_pipeline.engine.http.retry import Attempt, RetryPolicy
from sync_pipeline.engine.mapping.payload import PayloadError, encode_batch, explain_unencodable
from sync_pipeline.engine.sinks.http_batch import (
    ACKNOWLEDGED_BY_DEFAULT,
    AuditedCalls,
    CredentialsRefused,
    DeliveryCounts,
    EndpointUnreachable,
    Refusals,
)
from sync_pipeline.engine.state.row_hashes import upsert_row_hashes
from sync_pipeline.engine.state.tracking import (
    DeliveredButUntracked,
    Rejection,
    TrackingStore,
    clear_rejection,
    utc_now,
)
from sync_pipeline.engine.tables import ROW_HASH_TABLE_NAME
from sync_pipeline.specs.model import ConflictAction

UpdateMethod = Literal["PUT", "PATCH"]
CONFLICT = 409
"""A create refused because the receiver holds the record already (a client-chosen id sent twice)."""
NOT_FOUND = 404
CREDENTIALS_REFUSED = frozenset({401})
"""Answers that refuse the caller, not the record (after any refresh the auth could make); a 403 may be about
one record (a permission on it) and fails that record alone."""


@dataclass(frozen=True)
class RecordChange:
    """One record to send: new (no external id yet: create it) or changed (update it at its external id)."""

    entity_id: str
    record: dict[str, Any]
    row_hash: str
    external_id: str | None

    @property
    def is_new(self) -> bool:
        """No external id is known: the receiver has never acknowledged this record."""
        return self.external_id is None

    @property
    def action(self) -> str:
        """What its call does, for messages: create or update."""
        return "create" if self.is_new else "update"


@dataclass
class RecordCounts(DeliveryCounts):
    """Delivery counts (`sent` = created + updated; a batch fails when any of its records failed)."""

    created: int = 0
    updated: int = 0
    adopted: int = 0
    """Creates answered 409 that were updated instead: records the receiver held without our state."""


@dataclass(frozen=True)
class _Outcome:
    """What the last attempt of a change means: its SchedulerLog call, the external id to keep, its excerpt."""

    call: ApiCall
    external_id: str | None = None
    excerpt: str = ""
    conflict: bool = False
    """A create answered 409 by a receiver that takes the id from us (`on_conflict: update`): the record is
    there already, to be updated; the call itself went as it should, so it is no failure."""


class RecordSender:
    """Creates and updates an entity's records, one call each, and keeps every outcome in the Log database.

    `send` may run on several threads at once (batches in flight); the counts are shared.
    """

    def __init__(
        self,
        entity_type: str,
        endpoint_url: str,
        api: RecordRequester,
        log_db: sa.Engine,
        scheduler_log: SchedulerLogWriter,
        tracking: TrackingStore,
        retry: RetryPolicy,
        log: logging.Logger,
        update_method: UpdateMethod = "PUT",
        id_field: str = "id",
        before_each_attempt: Callable[[], None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
        acknowledgement: Acknowledgement = ACKNOWLEDGED_BY_DEFAULT,
        on_conflict: ConflictAction = "fail",
        max_attempts: int | None = None,
    ) -> None:
        if update_method not in get_args(UpdateMethod):
            raise ValueError(f"update_method: {update_method!r} is not allowed (PUT or PATCH)")
        if not all(id_field.split(".")):
            raise ValueError(f"id_field: {id_field!r} is not a field name or a dotted path such as 'data.id'")
        self.entity_type = entity_type
        self.endpoint_url = endpoint_url.rstrip("/")
        self.counts = RecordCounts()
        self._counting = threading.Lock()  # records may be sent from several threads at once
        self._refusals = Refusals(tracking, entity_type, self.counts, self._counting, log, max_attempts)
        self._tracking = tracking
        self._calls = AuditedCalls(
            tracking, entity_type, retry, self.counts, self._counting, before_each_attempt, sleep
        )
        self._api = api
        self._log_db = log_db
        self._scheduler_log = scheduler_log
        self._log = log
        self._update_method = update_method
        self._id_path = id_field.split(".")
        self._id_field = id_field
        self._acknowledgement = acknowledgement
        self._on_conflict = on_conflict
        self._failures: list[Rejection] = []
        """Records that failed transiently in this run, for `queue_failures`."""

    def send(self, changes: Sequence[RecordChange]) -> None:
        """Send each change with its own call, in order; an unreachable endpoint stops the batch and the entity."""
        failed = 0
        for position, change in enumerate(changes):
            try:
                failed += not self._deliver(change)
            except EndpointUnreachable as exc:
                self._count_failed(len(changes) - position, str(exc))  # this one and the rest: left for next run
                self._count_batch(ok=False)
                raise
        self._count_batch(ok=failed == 0)

    def _deliver(self, change: RecordChange) -> bool:
        """One change sent and settled: kept, rejected or failed; False only when it failed."""
        try:
            body = encode_batch([change.record])[1:-1]  # the one encoder; its array of one, unwrapped
        except PayloadError:
            self.reject([Rejection(change.entity_id, None, f"not sent: {explain_unencodable(change.record)}")])
            return True
        outcome = self._call_with_retries(change, body)
        conflicted: ApiCall | None = None
        if outcome.conflict:
            conflicted, adopted = outcome.call, self._id_in(change.record)
            if adopted is None:  # the declaration is checked for it at load; a record may still lack it
                error = f"HTTP 409 Conflict to create, and no id at {self._id_field!r} in the record to update it at"
                refused = replace(conflicted, error=error)
                self._tracking.record_call(self.entity_type, refused)
                return self._failed(change, refused)
            change = replace(change, external_id=adopted)
            outcome = self._call_with_retries(change, body)
            if outcome.call.ok:
                outcome = replace(outcome, external_id=adopted)
            else:
                self._tracking.record_call(self.entity_type, conflicted)
        call = outcome.call
        if call.ok:
            self._keep(change, outcome, conflicted)
            return True
        if call.http_status in CREDENTIALS_REFUSED:  # every other call would be refused too: stop the entity
            raise CredentialsRefused(
                f"the receiver refused the credentials (HTTP {call.http_status}) at record {change.entity_id}; the "
                "rest is left for a run with a credential it accepts"
            )
        if call.http_status in REJECTING_STATUSES or (conflicted is not None and call.http_status == NOT_FOUND):
            reason = f"rejected by the API: HTTP {call.http_status} to {change.action}"
            if conflicted is not None:
                reason = f"rejected by the API: HTTP 409 to create, then HTTP {call.http_status} to update at that id"
            self.reject([Rejection(change.entity_id, call.http_status, reason, outcome.excerpt)])
            return True
        return self._failed(change, call)

    def _failed(self, change: RecordChange, call: ApiCall) -> bool:
        """A record left for the next run: counted, logged with why and, once the run settles, kept in the retry
        queue (one more failed run: a record failing every run is dead-lettered like a refused one); False."""
        self._count_failed(1, call.error or "")
        self._log.error(
            f"{self.entity_type}: record {change.entity_id} failed after {call.attempt} attempt(s), "
            f"left for the next run: {call.error}"
        )
        reason = f"failed to {change.action} after {call.attempt} attempt(s): {call.error}"
        with self._counting:  # queued when the run has settled, see `queue_failures`
            self._failures.append(Rejection(change.entity_id, call.http_status, reason))
        return False

    def queue_failures(self) -> None:
        """At the end of a run that went through, before its mark moves: keep the records that failed
        transiently in the retry queue. When several failed and the receiver took none (an outage of the whole
        receiver, night after night), their count grows but none is dead-lettered: that needs a run showing the
        receiver up, or a record failing on its own."""
        with self._counting:
            failures, self._failures = self._failures, []
            receiver_up = self.counts.sent > 0
        if failures:
            self._refusals.queue(failures, may_die=receiver_up or len(failures) == 1)

    def _keep(self, change: RecordChange, outcome: _Outcome, conflicted: ApiCall | None = None) -> None:
        """The row hash and external id upserted with the call's SchedulerLog row (and the 409 before it, for an
        adopted record), in one transaction."""
        try:
            with self._log_db.begin() as conn:
                upsert_row_hashes(
                    conn, self.entity_type, [(change.entity_id, change.row_hash, outcome.external_id)], utc_now()
                )
                if conflicted is not None:
                    self._scheduler_log.write(conn, self.entity_type, conflicted)
                self._scheduler_log.write(conn, self.entity_type, outcome.call)
                clear_rejection(conn, self.entity_type, change.entity_id)
        except sa.exc.SQLAlchemyError as exc:
            raise DeliveredButUntracked(
                f"record {change.entity_id} was acknowledged but its row hash could not be written to "
                f"{ROW_HASH_TABLE_NAME} (the next run sends it again, as a {change.action}): {describe_db_error(exc)}",
                1,
            ) from exc
        with self._counting:
            self.counts.sent += 1
            self.counts.adopted += conflicted is not None
            if change.is_new:
                self.counts.created += 1
            else:
                self.counts.updated += 1

    def _call_with_retries(self, change: RecordChange, body: bytes) -> _Outcome:
        """The last attempt's outcome (its call logged by `_keep` when it succeeded); every other
        attempt is logged as a failure as it happens."""
        if change.external_id is None:
            method, url, key = "POST", self.endpoint_url, idempotency_key(self.entity_type, [change.entity_id], body)
        else:
            method, url, key = (
                self._update_method,
                f"{self.endpoint_url}/{urllib.parse.quote(change.external_id, safe='')}",
                None,
            )
        return self._calls.call(
            lambda: self._api.request(method, url, body, key), lambda attempt: self._outcome(attempt, change, url)
        )

    def _outcome(self, attempt: Attempt, change: RecordChange, url: str) -> _Outcome:
        """The SchedulerLog call of an attempt and, for an acknowledged create, the external id it gave."""

        def call(status: int | None, error: str | None) -> ApiCall:
            return ApiCall(url, 1, status, round(attempt.seconds * 1000), error, attempt.number)

        response = attempt.response
        if response is None:
            prefix = "endpoint unreachable" if attempt.unreachable else "no response"
            return _Outcome(call(None, f"{prefix}: {attempt.failure}"))
        status, excerpt = response.status_code, response.body_excerpt
        if status == CONFLICT and change.is_new and self._on_conflict == "update":
            return _Outcome(call(status, None), excerpt=excerpt, conflict=True)
        if not response.is_2xx:
            error = f"HTTP {status}: {excerpt}"
            if status == CONFLICT and change.is_new:
                error = f"HTTP 409 Conflict to create: the receiver may hold this record already: {excerpt}"
            return _Outcome(call(status, error), excerpt=excerpt)
        verdict = self._acknowledgement.judge(response, [change.entity_id])
        if isinstance(verdict, NotAcknowledged):  # the same answer would come back: not retried
            return _Outcome(call(status, verdict.reason), excerpt=excerpt)
        if not change.is_new:
            return _Outcome(call(status, None))  # an update keeps the external id already stored
        external_id = self._created_id(response)
        if external_id is None:
            error = (
                f"HTTP {status} to create but no id at {self._id_field!r} in the answer: the record stays new "
                f"and is created again next run (api id_field names where the receiver puts it)"
            )
            return _Outcome(call(status, error), excerpt=excerpt)
        return _Outcome(call(status, None), external_id)

    def _created_id(self, response: ApiResponse) -> str | None:
        """The receiver's id for a created record, at `id_field` (dots into nested objects); None if absent."""
        try:
            found: object = json.loads(response.body)
        except ValueError:
            return None
        return self._id_in(found)

    def _id_in(self, found: object) -> str | None:
        """The value at `id_field` (dots into nested objects) as text; None when absent or not an id."""
        return id_at(found, self._id_path)

    def _count_failed(self, records: int, error: str) -> None:
        with self._counting:
            self.counts.failed += records
            self.counts.first_error = self.counts.first_error or error

    def _count_batch(self, ok: bool) -> None:
        with self._counting:
            if ok:
                self.counts.batches_ok += 1
            else:
                self.counts.batches_failed += 1

    def reject(self, rejections: Sequence[Rejection], rows: int | None = None) -> None:
        """Keep the refusals in TB_R_SYNC_REJECTED (the row hashes stay as they were, so the records go again
        next run); `rows` is how many source rows they stand for, when not one each."""
        self._refusals.record(rejections, rows)


def id_at(found: object, path: Sequence[str]) -> str | None:
    """The value at a dotted path (`path` its parts) into nested objects, as text; None when absent or not an id
    (a boolean, an object, an empty text)."""
    for part in path:
        found = found.get(part) if isinstance(found, Mapping) else None
    if isinstance(found, bool) or not isinstance(found, str | int) or found == "":
        return None
    return str(found)
