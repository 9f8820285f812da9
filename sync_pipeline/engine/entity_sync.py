"""One entity's sync: source rows out to the receiver, and what it acknowledged kept in the Log database.

A batch sink sends the untracked rows in batches and tracks the acknowledged ones (TB_R_SYNC_TRACKING);
a create/update sink sends each new or changed row on its own call and keeps its row hash
(TB_R_SYNC_ROW_HASH). The entity runs under its lock in the Log database. A failed batch or record is
logged and left for the next run, and the entity goes on. An entity whose source, Log database or
endpoint cannot be reached, or whose lock is held by another run, stops early with the reason in its
report; the caller decides what that means for the run. While it sends, it logs its progress once
per interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import cast

import sqlalchemy as sa

from sync_pipeline.engine.batching import Batch, ScanCounts, untracked_batches
from sync_pipeline.engine.changes import ChangeSender
from sync_pipeline.engine.dry_run import DryRunPreview, preview
from sync_pipeline.engine.http.api import Acknowledgement, BatchPoster, RecordRequester
from sync_pipeline.engine.mapping.field_map import FieldMap
from sync_pipeline.engine.mapping.payload import RecordBuilder
from sync_pipeline.engine.progress import ProgressReporter, count_candidates
from sync_pipeline.engine.sinks.http_batch import BatchSender, DeliveryCounts, EndpointUnreachable, RetryPolicy
from sync_pipeline.engine.sinks.http_records import RecordSender, UpdateMethod
from sync_pipeline.engine.sources.sql_table import SourceUnavailable, read_pages
from sync_pipeline.engine.state.entity_lock import EntityLock, EntityLocked, LockLost
from sync_pipeline.engine.state.row_hashes import RowHashStore
from sync_pipeline.engine.state.selection import SEND_UNTRACKED, Selection
from sync_pipeline.engine.state.tracking import DeliveredButUntracked, TrackingStore, TrackingUnavailable
from sync_pipeline.specs.model import EntitySpec


@dataclass(frozen=True)
class EntitySyncPlan:
    """Everything needed to sync one entity in this deployment."""

    spec: EntitySpec
    entity_type: str
    """The entity's EntityType in the Log database: its name, prefixed by its sync's namespace if it has one."""
    table: sa.Table
    key_column: str
    endpoint_url: str
    batch_size: int
    mapping: FieldMap | None = None
    """The receiver's fields, built from the spec's mapping when the plan is made (none: the model's own)."""


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
    progress_interval_seconds: float = 10.0


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


def sync_entity(
    plan: EntitySyncPlan,
    source: sa.Engine,
    tracking: TrackingStore,
    api: BatchPoster,
    log: logging.Logger,
    owner: str,
    policy: DeliveryPolicy = DeliveryPolicy(),
    selection: Selection = SEND_UNTRACKED,
    dry_run: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> EntitySyncReport:
    """Send the entity's selected rows (by default: untracked); never raises for database, API,
    lock or data faults. A dry run reads, selects and validates, but neither sends nor writes.
    `clock` times the progress lines."""
    entity = plan.entity_type
    report = EntitySyncReport(entity)
    scan = ScanCounts()
    columns = [f.name for f in plan.spec.fields]
    started = time.perf_counter()
    lock = EntityLock(tracking.engine, entity, owner, policy.lock_lease_seconds, policy.lock_wait_seconds, sleep)
    record_sink = plan.spec.record_sink
    batches = untracked_batches(
        read_pages(source, plan.table, columns, plan.key_column, plan.batch_size),
        key_column=plan.key_column,
        key_index=columns.index(plan.key_column),
        key_type=plan.spec.field(plan.key_column).type,
        # A create/update entity reads every row: its state is the row hashes, not TB_R_SYNC_TRACKING.
        tracked_among=selection.already_sent(entity, tracking) if record_sink is None else _nothing_tracked,
        records=RecordBuilder(plan.spec, plan.key_column),
        batch_size=plan.batch_size,
        counts=scan,
    )
    delivery: BatchSender | ChangeSender
    if record_sink is None:
        delivery = BatchSender(
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
    else:
        records = RecordSender(
            entity,
            plan.endpoint_url,
            cast(RecordRequester, api),
            tracking.engine,
            tracking.log_writer,
            tracking,
            policy.retry,
            log,
            update_method=cast(UpdateMethod, record_sink.update_method),
            acknowledgement=policy.acknowledgement,
            id_field=record_sink.id_field,
            before_each_attempt=lock.refresh_if_due,
            sleep=sleep,
        )
        delivery = ChangeSender(records, plan.mapping, RowHashStore(tracking.engine), entity)
    try:
        if dry_run:
            report.preview = preview(batches)
        else:
            with lock, ThreadPoolExecutor(policy.max_in_flight, thread_name_prefix=f"send-{entity}") as senders:
                interval = policy.progress_interval_seconds
                if interval:
                    report.candidates = count_candidates(entity, plan.table, source, tracking, selection, log)
                progress = ProgressReporter(entity, interval, log, report.candidates, clock)

                def send_and_report(batch: Batch) -> None:
                    delivery.send(batch)
                    progress.batch_settled(delivery.counts)

                send_in_flight(batches, send_and_report, senders, policy.max_in_flight)
    except DeliveredButUntracked as exc:
        report.delivered_untracked = exc.count
        report.stopped_because = str(exc)
    except (EndpointUnreachable, SourceUnavailable, TrackingUnavailable, EntityLocked, LockLost) as exc:
        report.stopped_because = str(exc)
    report.absorb(scan, delivery.counts)
    if isinstance(delivery, ChangeSender):  # unchanged records were read, like tracked ones, and not sent
        report.already_tracked = delivery.changes.unchanged
    report.duration_seconds = time.perf_counter() - started
    if report.stopped_because:
        log.error(f"{entity} stopped early: {report.stopped_because}")
    return report
