"""One entity's sync: untracked source rows out to the API in batches, acknowledged ones tracked.

A failed batch is logged and left untracked for the next run, and the entity goes on. An entity
whose source, Log database or endpoint cannot be reached stops early with the reason in its report;
the caller decides what that means for the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import sqlalchemy as sa

from sync_pipeline.engine.api import ApiCallFailed, ApiUnreachable, BatchPoster
from sync_pipeline.engine.batching import Batch, ScanCounts, untracked_batches
from sync_pipeline.engine.entity_ids import InvalidEntityId
from sync_pipeline.engine.payload import PayloadError, RecordBuilder, encode_batch
from sync_pipeline.engine.scheduler_log import ApiCall
from sync_pipeline.engine.source_pages import SourceUnavailable, read_pages
from sync_pipeline.engine.tracking import TrackingStore, TrackingUnavailable
from sync_pipeline.entities import EntitySpec

MAX_RESPONSE_EXCERPT = 500


@dataclass(frozen=True)
class EntitySyncPlan:
    """Everything needed to sync one entity in this deployment."""

    spec: EntitySpec
    table: sa.Table
    key_column: str
    endpoint_url: str
    batch_size: int


@dataclass
class EntitySyncReport:
    """What one entity's sync did; becomes the asset's metadata and check result."""

    entity: str
    rows_found: int = 0
    already_tracked: int = 0
    sent: int = 0
    failed: int = 0
    batches_ok: int = 0
    batches_failed: int = 0
    duration_seconds: float = 0.0
    stopped_because: str | None = None
    first_batch_error: str | None = None

    @property
    def succeeded(self) -> bool:
        """True when every batch went through and the entity was not stopped."""
        return self.stopped_because is None and self.batches_failed == 0


def send_batch(api: BatchPoster, plan: EntitySyncPlan, batch: Batch, records: RecordBuilder) -> ApiCall:
    """Encode and POST one batch; every outcome, good or bad, comes back as an `ApiCall`."""
    started = time.perf_counter()

    def call(status: int | None, error: str | None) -> ApiCall:
        duration_ms = round((time.perf_counter() - started) * 1000)
        return ApiCall(plan.endpoint_url, len(batch.rows), status, duration_ms, error)

    try:
        body = encode_batch([records.build(row) for row in batch.rows])
    except PayloadError as exc:
        return call(None, f"not sent: {exc}")
    try:
        response = api.post_batch(plan.endpoint_url, body)
    except ApiUnreachable as exc:
        raise _Unreachable(call(None, f"endpoint unreachable: {exc}")) from exc
    except ApiCallFailed as exc:
        return call(None, f"no response: {exc}")
    if response.ok:
        return call(response.status_code, None)
    return call(response.status_code, f"HTTP {response.status_code}: {response.body_excerpt[:MAX_RESPONSE_EXCERPT]}")


class _Unreachable(Exception):
    """Carries the failed call of an unreachable endpoint out of the batch loop."""

    def __init__(self, call: ApiCall) -> None:
        super().__init__(call.error)
        self.call = call


def sync_entity(
    plan: EntitySyncPlan,
    source: sa.Engine,
    tracking: TrackingStore,
    api: BatchPoster,
    log: logging.Logger,
) -> EntitySyncReport:
    """Send the entity's untracked rows; never raises for database, API or data faults."""
    entity = plan.spec.name
    report = EntitySyncReport(entity)
    counts = ScanCounts()
    columns = [field.name for field in plan.spec.fields]
    records = RecordBuilder(plan.spec)
    started = time.perf_counter()
    try:
        pages = read_pages(source, plan.table, columns, plan.key_column, plan.batch_size)
        batches = untracked_batches(
            pages,
            key_index=columns.index(plan.key_column),
            key_type=plan.spec.field(plan.key_column).type,
            tracked_among=lambda ids: tracking.tracked_among(entity, ids),
            batch_size=plan.batch_size,
            counts=counts,
        )
        for batch in batches:
            call = send_batch(api, plan, batch, records)
            if call.ok:
                tracking.record_delivered(entity, batch.entity_ids, call)
                report.batches_ok += 1
                report.sent += call.batch_size
                continue
            tracking.record_failed(entity, call)
            report.batches_failed += 1
            report.failed += call.batch_size
            report.first_batch_error = report.first_batch_error or call.error
            log.error(f"{entity} {batch.describe()} failed, left for the next run: {call.error}")
    except _Unreachable as unreachable:
        report.batches_failed += 1
        report.failed += unreachable.call.batch_size
        report.stopped_because = str(unreachable.call.error)
        _log_unreachable(tracking, entity, unreachable.call, log)
    except (SourceUnavailable, TrackingUnavailable) as exc:
        report.stopped_because = str(exc)
    except InvalidEntityId as exc:  # the entity cannot be tracked safely past such a key
        report.stopped_because = f"bad key in {plan.table.fullname}.{plan.key_column}: {exc}"
    report.rows_found = counts.rows_found
    report.already_tracked = counts.already_tracked
    report.duration_seconds = time.perf_counter() - started
    if report.stopped_because:
        log.error(f"{entity} stopped early: {report.stopped_because}")
    return report


def _log_unreachable(tracking: TrackingStore, entity: str, call: ApiCall, log: logging.Logger) -> None:
    """Log the call that found the endpoint unreachable; a Log database fault here is only reported."""
    try:
        tracking.record_failed(entity, call)
    except TrackingUnavailable as exc:
        log.error(f"{entity}: could not log the unreachable endpoint either: {exc}")
