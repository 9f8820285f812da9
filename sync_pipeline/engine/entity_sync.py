"""One entity's sync: source records out to their destination, and what was settled kept in the Log database.

The parts come from the entity's spec: a source (a table by keyset pages, or an HTTP API's pages), a
state (never sent, row hash, since cursor, none) and a sink. A batch sink sends the untracked rows in
batches and tracks the acknowledged ones (TB_R_SYNC_TRACKING); a create/update sink sends each new or
changed row on its own call and keeps its row hash (TB_R_SYNC_ROW_HASH); a SQL sink upserts or updates
rows of a table. A since-cursor entity reads from its mark on and moves the mark (TB_R_SYNC_CURSOR)
at the end of a run that read everything, never past a record that failed.

The entity runs under its lock in the Log database. A failed batch or record is logged and left for
the next run, and the entity goes on. An entity whose source, Log database or
endpoint cannot be reached, or whose lock is held by another run, stops early with the reason in its
report; the caller decides what that means for the run. While it sends, it logs its progress once
per interval.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast

import sqlalchemy as sa

from sync_pipeline.engine.batching import Batch, ScanCounts, untracked_batches
from sync_pipeline.engine.changes import ChangeSender
from sync_pipeline.engine.dry_run import DryRunPreview, preview
from sync_pipeline.engine.http.api import Acknowledgement, BatchPoster, RecordRequester
from sync_pipeline.engine.mapping.field_map import FieldMap
from sync_pipeline.engine.mapping.payload import RecordBuilder
from sync_pipeline.engine.progress import ProgressReporter, count_candidates
from sync_pipeline.engine.sinks.http_batch import (
    BatchSender,
    CredentialsRefused,
    DeliveryCounts,
    EndpointUnreachable,
    Refusals,
    RetryPolicy,
)
from sync_pipeline.engine.sinks.http_records import RecordSender, UpdateMethod
from sync_pipeline.engine.sinks.record_details import DetailFetcher
from sync_pipeline.engine.sinks.sql_batch import SqlBatchSender, TableCounts, reflect_table, table_sink
from sync_pipeline.engine.sinks.sql_deletions import MissingRows
from sync_pipeline.engine.sinks.sql_rows import SqlSinkUnavailable
from sync_pipeline.engine.sinks.sql_target import RunTransaction
from sync_pipeline.engine.sources.http_pages import HttpPagesSource, fetch_json
from sync_pipeline.engine.sources.http_windows import WindowedPagesSource
from sync_pipeline.engine.sources.queued import queued_first
from sync_pipeline.engine.sources.read_calls import AuditedReads
from sync_pipeline.engine.sources.source import KeyedSource, SqlTableSource
from sync_pipeline.engine.sources.sql_table import SinceFilter, SourceRefused, SourceUnavailable
from sync_pipeline.engine.state.change_history import ChangeHistory
from sync_pipeline.engine.state.entity_lock import EntityLock, EntityLocked, LockLost
from sync_pipeline.engine.state.references import ReferenceCheck, ReferencedEntity
from sync_pipeline.engine.state.retry_queue import queue_ids
from sync_pipeline.engine.state.row_hashes import RowHashStore
from sync_pipeline.engine.state.selection import SEND_UNTRACKED, Selection, TrackedSnapshot
from sync_pipeline.engine.state.since_cursor import CursorStore, CursorWatermark, cursor_text, cursor_value
from sync_pipeline.engine.state.tracking import DeliveredButUntracked, TrackingStore, TrackingUnavailable, utc_now
from sync_pipeline.specs.model import EntitySpec, StateKind


@dataclass(frozen=True)
class EntitySyncPlan:
    """Everything needed to sync one entity in this deployment."""

    spec: EntitySpec
    entity_type: str
    """The entity's EntityType in the Log database: its name, prefixed by its sync's namespace if it has one."""
    table: sa.Table | None
    """The source table; None when the entity reads an HTTP API."""
    key_column: str
    endpoint_url: str
    """The API endpoint the entity is sent to or read from ("" when it does neither)."""
    batch_size: int
    mapping: FieldMap | None = None
    """The destination's fields, built from the spec's mapping when the plan is made (none: the model's own)."""
    target_table: str | None = None
    """The table a SQL sink writes, as the settings name it (schema.table)."""
    fixed_columns: Mapping[str, Any] = field(default_factory=dict)
    """Columns a SQL sink sets on every row: the partition column with the run's customer."""
    references: tuple[ReferencedEntity, ...] = ()
    """The spec's references, each with the EntityType of the records it points at."""
    source_url: str = ""
    """Where its HTTP source reads, when not at `endpoint_url` (another API's endpoint: CHR's accounts)."""
    lookback: dt.timedelta = dt.timedelta(0)
    """A since-cursor's read starts this long before the mark: rows a late commit stamped before the mark
    are read too (re-reading the others is harmless: the sinks' keys and row hashes)."""
    first_window: dt.timedelta = dt.timedelta(days=30)
    """A windowed search without a mark yet reads this far back."""

    @property
    def source_name(self) -> str:
        """Where the records are read, for messages: the table's name or the endpoint."""
        return self.table.fullname if self.table is not None else f"GET {self.source_url or self.endpoint_url}"

    @property
    def destination_name(self) -> str:
        """Where the records go, for messages: the endpoint or the target table."""
        return self.target_table or self.endpoint_url


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard to try: retries, rejection splitting and the entity lock's lease; how often to log progress."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_split_depth: int = 12
    max_calls_per_batch: int = 100
    acknowledgement: Acknowledgement = field(default_factory=Acknowledgement)
    lock_lease_seconds: float = 600.0
    lock_wait_seconds: float = 0.0
    max_in_flight: int = 1
    max_details_in_flight: int = 4
    progress_interval_seconds: float = 10.0
    max_record_attempts: int = 10
    """Runs a record of a per-record sink may fail (refused or 5xx after retries) before it is dead-lettered."""


@dataclass(frozen=True)
class DetailCounts:
    """A SQL sink's GETs of its rows' details (`name`: what they are, e.g. `export`): made and failed (those
    rows are marked, and fetched again on the next run)."""

    name: str
    fetched: int
    failed: int


@dataclass
class EntitySyncReport:
    """What one entity's sync did; becomes the asset's metadata and check result."""

    entity: str
    rows_found: int = 0
    candidates: int | None = None
    """How many records the run expected to settle (send, reject or fail); None when not counted."""
    already_tracked: int = 0
    sent: int = 0
    failed: int = 0
    rejected: int = 0
    delivered_untracked: int = 0
    batches_ok: int = 0
    batches_failed: int = 0
    api_calls: int = 0
    retries: int = 0
    duration_seconds: float = 0.0
    stopped_because: str | None = None
    first_batch_error: str | None = None
    rejected_ids: list[str] = field(default_factory=list)
    preview: DryRunPreview | None = None
    token_requests: int | None = None
    """OAuth2 token requests the run made (each retry counted); None without OAuth2."""
    deleted: int | None = None
    """Rows a complete listing no longer included, marked deleted; None when the sink keeps no such mark."""
    inserted: int | None = None
    updated: int | None = None
    """A SQL sink's rows inserted and updated (together `sent`); None for other sinks."""
    throttled: int = 0
    """Answers 429 (rate limited) to the source's calls."""
    failed_calls: int | None = None
    """The source's call attempts without a 2xx answer; None when the entity reads no API."""
    conflicts: int | None = None
    """Records not applied though they differ from their stored row (a sink keeping history); else None."""
    details: DetailCounts | None = None
    """GETs of rows' details (a sink with details; else None)."""
    created: int | None = None
    adopted: int | None = None
    """A per-record sink's creates, and its creates answered 409 and updated instead; None for other sinks."""
    held_back: int | None = None
    """Records not sent because the receiver does not hold what they point at yet; None without references."""
    dead: int | None = None
    """A per-record sink's dead-lettered records read and not sent (no call); None for other sinks."""
    retryable: bool = False
    """It stopped early for a reason that may be gone later (see `is_retryable`)."""
    tracked: int | None = None
    """A never-sent entity's tracked records once the run ended, when its tracked snapshot says so without a
    COUNT (the snapshot's size plus what the run tracked); None otherwise."""

    @property
    def succeeded(self) -> bool:
        """True when every record went through and the entity ran to the end."""
        return self.stopped_because is None and self.batches_failed == 0 and self.rejected == 0

    def absorb(self, scan: ScanCounts, delivery: DeliveryCounts) -> None:
        """Take the reading and delivery figures into the report."""
        self.rows_found, self.already_tracked = scan.rows_found, scan.already_tracked
        self.sent, self.failed, self.rejected = delivery.sent, delivery.failed, delivery.rejected
        self.batches_ok, self.batches_failed = delivery.batches_ok, delivery.batches_failed
        self.api_calls, self.retries = delivery.api_calls, delivery.retries
        self.first_batch_error, self.rejected_ids = delivery.first_error, delivery.rejected_ids


def send_in_flight(batches: Iterable[Batch], send: Callable[[Batch], None], senders: Executor, limit: int) -> None:
    """`send` batches on `senders` with at most `limit` in flight, reading the next while they post.

    The window is bounded, so memory holds at most `limit` + 1 batches; the first stop condition a
    batch raises (unreachable endpoint, Log database lost, lock lost) is raised here.
    """
    in_flight: set[Future[None]] = set()
    for batch in batches:
        if len(in_flight) >= limit:
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
        in_flight.add(senders.submit(send, batch))
    for future in in_flight:
        future.result()


def _nothing_tracked(entity_ids: Sequence[str]) -> set[str]:
    return set()


def _nothing() -> None:
    return None


class Delivery(Protocol):
    """An entity's sink step: sends (or writes) one built batch, and its figures so far."""

    @property
    def counts(self) -> DeliveryCounts: ...

    def send(self, batch: Batch) -> None: ...


class SinkUnavailable(Exception):
    """The entity's sink cannot be set up (its target table, its database): the entity stops."""


def sync_entity(
    plan: EntitySyncPlan,
    source: sa.Engine | None,
    tracking: TrackingStore,
    api: BatchPoster,
    log: logging.Logger,
    owner: str,
    policy: DeliveryPolicy = DeliveryPolicy(),
    selection: Selection = SEND_UNTRACKED,
    dry_run: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    target: sa.Engine | None = None,
    run_id: str | None = None,
    source_api: RecordRequester | None = None,
) -> EntitySyncReport:
    """Send the entity's selected rows (by default: untracked); never raises for database, API,
    lock or data faults. `source` is the source database (None for an HTTP source), `target` the
    database of a SQL sink. A dry run reads, selects and validates, but neither sends nor writes.
    `clock` times the progress lines; `run_id` names the run in the history a SQL sink keeps; `source_api`
    is the API an HTTP source reads, when not the sink's `api`."""
    entity = plan.entity_type
    report = EntitySyncReport(entity)
    scan = ScanCounts()
    started = time.perf_counter()
    lock = EntityLock(tracking.engine, entity, owner, policy.lock_lease_seconds, policy.lock_wait_seconds, sleep)
    # A dry run holds no lock and writes nothing: its reads are counted, not written to SchedulerLog.
    reads = AuditedReads(
        entity,
        source_api or cast(RecordRequester, api),
        tracking,
        _nothing if dry_run else lock.refresh_if_due,
        not dry_run,
    )
    cursor = plan.spec.cursor_field if plan.spec.state is StateKind.SINCE_CURSOR else None
    key_index = [f.name for f in plan.spec.fields].index(plan.key_column)
    key_type = plan.spec.field(plan.key_column).type
    try:
        mark = CursorStore(tracking.engine).load(entity) if cursor else None
        reader = entity_source(plan, source, mark, reads, policy.retry, sleep)
        # Past the mark, the retry queue's records are read again by key first (see engine/sources/queued.py).
        by_key = reader.reads_by_key
        queued = queue_ids(tracking.engine, entity, dead=False) if mark is not None and by_key else []
        delivery = entity_delivery(
            plan, api, tracking, target, lock, selection, policy, log, sleep, reads, run_id, frozenset(queued)
        )
    except (SourceUnavailable, TrackingUnavailable, SinkUnavailable) as exc:
        report.retryable = is_retryable(exc)
        return _stopped(report, str(exc), started, log)
    # Only a never-sent entity's state is TB_R_SYNC_TRACKING; the others read every row of the source.
    already_sent = (
        selection.already_sent(entity, tracking) if plan.spec.state is StateKind.NEVER_SENT else _nothing_tracked
    )
    snapshot = already_sent if isinstance(already_sent, TrackedSnapshot) else None
    batches = untracked_batches(
        queued_first(reader, queued, key_index, key_type) if queued else reader.pages(),
        key_column=plan.key_column,
        key_index=key_index,
        key_type=key_type,
        tracked_among=already_sent,
        records=RecordBuilder(plan.spec, plan.key_column),
        batch_size=plan.batch_size,
        counts=scan,
    )
    watermark = CursorWatermark(plan.spec.field(cursor), mark) if cursor else None
    try:
        if dry_run:
            report.preview = preview(batches)
        else:
            with lock, ThreadPoolExecutor(policy.max_in_flight, thread_name_prefix=f"send-{entity}") as senders:
                if watermark is not None and cursor is not None and isinstance(reader, CappedSource):
                    watermark.cap(reader.ceiling(cursor))
                interval = policy.progress_interval_seconds
                if interval:
                    tracked = partial(len, snapshot) if snapshot is not None else None
                    report.candidates = count_candidates(entity, reader.count, tracked, selection, log)
                progress = ProgressReporter(entity, interval, log, report.candidates, clock)

                def send_and_report(batch: Batch) -> None:
                    failed_before, held_before = delivery.counts.failed, _held_back(delivery)
                    delivery.send(batch)
                    if watermark is not None and cursor is not None:
                        # A failed record is in the retry queue, which a source read by key brings back past the
                        # mark; from any other source it must hold the mark. Another batch's failure holds it
                        # too: safe.
                        failed = delivery.counts.failed > failed_before and not by_key
                        held = failed or _held_back(delivery) > held_before
                        watermark.observe([record.get(cursor) for record in batch.records], held)
                    progress.batch_settled(delivery.counts)

                send_in_flight(batches, send_and_report, senders, policy.max_in_flight)
                if isinstance(delivery, ChangeSender):  # before the mark moves past them
                    delivery.queue_failures()
                if isinstance(delivery, SqlBatchSender) and delivery.missing is not None:
                    marked = delivery.mark_missing(utc_now())
                    report.deleted = marked.deleted if marked else None
                    if marked is None:
                        log.warning(f"{entity}: no row marked deleted: a record was refused, its key unknown")
                if isinstance(delivery, SqlBatchSender):
                    delivery.commit()
                if watermark is not None and (moved := watermark.next_text()) is not None:
                    CursorStore(tracking.engine).save(entity, moved)
    except DeliveredButUntracked as exc:
        report.delivered_untracked = exc.count
        report.stopped_because = str(exc)
    except (
        EndpointUnreachable,
        SourceUnavailable,
        TrackingUnavailable,
        EntityLocked,
        LockLost,
        SqlSinkUnavailable,
    ) as exc:
        report.stopped_because = str(exc)
        report.retryable = is_retryable(exc)
    try:
        tracking.flush_calls()  # the reads logged since the last write, however the entity ended
    except TrackingUnavailable as exc:
        if report.stopped_because is None:
            report.stopped_because, report.retryable = str(exc), is_retryable(exc)
    report.absorb(scan, delivery.counts)
    if snapshot is not None and snapshot.taken and not dry_run:
        report.tracked = len(snapshot) + tracking.newly_tracked(entity)
    if report.stopped_because and isinstance(delivery, SqlBatchSender) and (undone := delivery.roll_back()):
        report.stopped_because += f"; {undone}"
        report.sent = 0
    report.api_calls += reads.calls
    report.retries += reads.retries
    if isinstance(delivery, ChangeSender):  # unchanged records were read, like tracked ones, and not sent
        report.already_tracked = delivery.changes.unchanged
        report.created, report.updated = delivery.counts.created, delivery.counts.updated
        report.adopted = delivery.counts.adopted
        report.dead = delivery.changes.dead
        if delivery.changes.first_dead:
            log.warning(
                f"{entity}: {report.dead} dead-lettered record(s) not sent (they failed "
                f"{policy.max_record_attempts} runs; `sync-pipeline resend` re-queues them), first "
                f"{delivery.changes.first_dead}"
            )
        if plan.references:
            report.held_back = delivery.changes.held_back
            if delivery.changes.first_held_back:
                log.warning(
                    f"{entity}: {report.held_back} record(s) held back until the receiver holds what they point "
                    f"at, first {delivery.changes.first_held_back}"
                )
    elif isinstance(delivery, SqlBatchSender):
        report.already_tracked = delivery.counts.unchanged
        counts = delivery.counts
        report.inserted, report.updated = (0, 0) if delivery.rolled_back else (counts.inserted, counts.updated)
        report.conflicts = counts.conflicts if delivery.history is not None else None
        if delivery.details is not None:
            report.details = DetailCounts(delivery.details.name, counts.details_fetched, counts.details_failed)
    report.throttled = reads.throttled
    report.failed_calls = reads.failed if reads.calls else None
    return _stopped(report, report.stopped_because, started, log)


def _held_back(delivery: Delivery) -> int:
    """Records a per-record sink held back so far (what they point at is not at the receiver yet)."""
    return delivery.changes.held_back if isinstance(delivery, ChangeSender) else 0


CappedSource = SqlTableSource | WindowedPagesSource
"""The sources that know the cursor's highest value when the read began (see `CursorWatermark.cap`)."""


def is_retryable(stop: Exception) -> bool:
    """Whether what stopped an entity may be gone later (a source, database or endpoint down or busy, a lock
    held), rather than something to fix first (a refusal, a missing table, a wrong declaration)."""
    return not isinstance(stop, SourceRefused | SinkUnavailable | CredentialsRefused)


def _stopped(report: EntitySyncReport, because: str | None, started: float, log: logging.Logger) -> EntitySyncReport:
    """The report, timed, with why the entity stopped early (logged) if it did."""
    report.stopped_because = because
    report.duration_seconds = time.perf_counter() - started
    if because:
        log.error(f"{report.entity} stopped early: {because}")
    return report


def entity_source(
    plan: EntitySyncPlan,
    source: sa.Engine | None,
    mark: str | None,
    reads: AuditedReads,
    retry: RetryPolicy,
    sleep: Callable[[float], None],
) -> KeyedSource:
    """Where the entity's records are read: its table from the mark (less the lookback) on, or its API's pages
    with the mark sent, or searched in time windows from the mark on."""
    spec = plan.spec
    cursor = spec.cursor_field
    since_value = None if cursor is None or mark is None else cursor_value(mark, spec.field(cursor))
    if since_value is not None and plan.lookback:
        since_value -= plan.lookback  # a datetime: the settings refuse a lookback for any other cursor
    http = spec.http_source
    if http is not None:

        def pages(
            params: Mapping[str, str],
            too_many: tuple[str, object] | None = None,
            since: tuple[str, str] | None = None,
        ) -> HttpPagesSource:
            return HttpPagesSource(
                plan.source_url or plan.endpoint_url,
                http.pagination,
                spec.fields,
                plan.key_column,
                get=reads.get,
                on_attempt=reads.on_attempt,
                params={**dict(http.params), **params},
                since=since,  # not in the by-key reads of the retry queue, whose records are behind the mark
                retry=retry,
                sleep=sleep,
                too_many=too_many,
                key_param=http.key_param,
            )

        window = http.window
        if window is not None:
            end = dt.datetime.now(dt.UTC)
            start = _aware(since_value) if since_value is not None else end - plan.first_window
            too_many = (window.too_many_path, window.too_many_value)
            names = [f.name for f in spec.fields]
            cursor_index = names.index(cursor) if cursor else None
            return WindowedPagesSource(
                window, start, end, lambda params: pages(params, too_many), cursor_index, names.index(plan.key_column)
            )
        since_text = None if since_value is None or cursor is None else cursor_text(since_value, spec.field(cursor))
        return pages({}, since=(http.since_param, since_text) if http.since_param and since_text is not None else None)
    if source is None or plan.table is None:
        raise SourceUnavailable(f"{spec.name}: no source database was given")
    since = SinceFilter(cursor, since_value) if cursor and since_value is not None else None
    columns = [f.name for f in spec.fields]
    return SqlTableSource(source, plan.table, columns, plan.key_column, plan.batch_size, since)


def _aware(value: dt.datetime) -> dt.datetime:
    """A mark as a time-zone-aware instant: a naive one is taken as UTC, as the Log database keeps times."""
    return value if value.utcoffset() is not None else value.replace(tzinfo=dt.UTC)


def entity_delivery(
    plan: EntitySyncPlan,
    api: BatchPoster,
    tracking: TrackingStore,
    target: sa.Engine | None,
    lock: EntityLock,
    selection: Selection,
    policy: DeliveryPolicy,
    log: logging.Logger,
    sleep: Callable[[float], None],
    reads: AuditedReads,
    run_id: str | None = None,
    queued: frozenset[str] = frozenset(),
) -> Delivery:
    """The entity's sink step: batches POSTed, records created or updated by row hash, or rows written to a
    table (their details read through `reads`, their history kept under `run_id`, the `queued` records taken
    off the retry queue once written)."""
    entity = plan.entity_type
    spec = plan.spec
    if spec.sql_sink is not None:
        if target is None or plan.target_table is None:
            raise SinkUnavailable(f"{spec.name}: no target database was given")
        sql = spec.sql_sink
        transaction = RunTransaction(target) if sql.commit == "run" else None
        try:
            fields = plan.mapping.destinations if plan.mapping else tuple(f.name for f in spec.fields)
            table = reflect_table(target, plan.target_table)
            details = None
            if sql.details is not None:
                get_json = partial(
                    fetch_json, get=reads.get, retry=policy.retry, on_attempt=reads.on_attempt, sleep=sleep
                )
                details = DetailFetcher(sql.details, table, plan.endpoint_url, get_json, policy.max_details_in_flight)
            sink = table_sink(transaction or target, table, sql, fields, details)
            deleted = sql.deleted_column
            missing = MissingRows(table, sql.key_columns, deleted, plan.fixed_columns) if deleted else None
        except SqlSinkUnavailable as exc:
            raise SinkUnavailable(str(exc)) from None
        except ValueError as exc:
            raise SinkUnavailable(f"{spec.name}: sink: {exc}") from None
        counts, counting = TableCounts(), threading.Lock()
        refusals = Refusals(tracking, entity, counts, counting, log)
        history = ChangeHistory(tracking.engine, entity, run_id) if sql.history else None
        return SqlBatchSender(
            entity,
            sink,
            plan.mapping,
            tracking,
            refusals,
            counts,
            counting,
            plan.fixed_columns,
            missing,
            history,
            transaction,
            queued,
        )
    if spec.record_sink is None:
        return BatchSender(
            entity,
            plan.endpoint_url,
            api,
            tracking,
            policy.retry,
            policy.max_split_depth,
            log,
            before_each_attempt=lock.refresh_if_due,
            refresh_tracking=selection.refreshes_tracking,
            sleep=sleep,
            acknowledgement=policy.acknowledgement,
            max_calls_per_batch=policy.max_calls_per_batch,
        )
    records = RecordSender(
        entity,
        plan.endpoint_url,
        cast(RecordRequester, api),
        tracking.engine,
        tracking.log_writer,
        tracking,
        policy.retry,
        log,
        update_method=cast(UpdateMethod, spec.record_sink.update_method),
        acknowledgement=policy.acknowledgement,
        id_field=spec.record_sink.id_field,
        before_each_attempt=lock.refresh_if_due,
        sleep=sleep,
        on_conflict=spec.record_sink.on_conflict,
        max_attempts=policy.max_record_attempts,
    )
    hashes = RowHashStore(tracking.engine)
    references = ReferenceCheck(plan.references, hashes) if plan.references else None
    update_at = None if spec.record_sink.create else spec.record_sink.id_field
    return ChangeSender(
        records,
        plan.mapping,
        hashes,
        entity,
        references,
        frozenset(queue_ids(tracking.engine, entity, dead=True)),
        update_at,
    )
