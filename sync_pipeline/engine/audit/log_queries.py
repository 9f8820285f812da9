"""The queries behind the sync log: this job's SchedulerLog rows, call counts, pending records, a summary.

SchedulerLog is TAMHR's shared table, so every query here selects this job's rows by their Activity,
`Sync Batch: <Entity>`. Queries are built on the typed tables and compile for SQL Server (TOP,
DATETIME2) as for the local databases. The alert sensor counts failed calls with `call_counts`, so
the viewer and the alerts never disagree about what failed. Rendering for people is `log_viewer`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import sqlalchemy as sa

from sync_pipeline.engine.audit.scheduler_log import (
    ACTIVITY_PREFIX,
    FAILURE,
    RUN_ID,
    SUCCESS,
    SchedulerLogWriter,
    activity,
)
from sync_pipeline.engine.batching import ScanCounts, untracked_batches, untracked_pages
from sync_pipeline.engine.changes import ChangeCounts, changes_of
from sync_pipeline.engine.entity_sync import EntitySyncPlan
from sync_pipeline.engine.mapping.payload import RecordBuilder
from sync_pipeline.engine.sources.source import SqlTableSource
from sync_pipeline.engine.sources.sql_table import SourceUnavailable, read_pages
from sync_pipeline.engine.state.references import ReferenceCheck
from sync_pipeline.engine.state.retry_queue import queue_ids
from sync_pipeline.engine.state.row_hashes import RowHashStore
from sync_pipeline.engine.state.selection import SEND_UNTRACKED
from sync_pipeline.engine.state.tracking import TrackingStore, TrackingUnavailable
from sync_pipeline.engine.tables import rejected_table, scheduler_log_table, tracking_table
from sync_pipeline.specs.tamhr import TAMHR_ENTITIES

PENDING = "Pending"
QUEUED = "Queued"
DEAD = "Dead"
STATUSES = (SUCCESS, FAILURE, PENDING, QUEUED, DEAD)
QUEUE_STATUSES = (QUEUED, DEAD)
"""The statuses listed from the retry queue (TB_R_SYNC_REJECTED) rather than SchedulerLog."""
DEFAULT_LIMIT = 200


def referenced_entities(entities: Sequence[str]) -> list[str]:
    """The entities asked for, or every entity in spec order when none was named."""
    return list(entities) if entities else [spec.name for spec in TAMHR_ENTITIES]


def utc_naive(moment: dt.datetime) -> dt.datetime:
    """A timestamp comparable with `CreatedOn` (naive UTC): aware values are converted, naive taken as UTC."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class LogQuery:
    """Which SchedulerLog rows to list: entities (all when empty), statuses (both when empty), a time range."""

    entities: Sequence[str] = ()
    statuses: Sequence[str] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = DEFAULT_LIMIT

    def where(self) -> list[sa.ColumnElement[bool]]:
        """The WHERE clauses: this job's activities, and the statuses and range asked for."""
        log = scheduler_log_table.c
        names = referenced_entities(self.entities)
        clauses: list[sa.ColumnElement[bool]] = [log.Activity.in_([activity(name) for name in names])]
        if self.statuses:
            clauses.append(log.Status.in_(list(self.statuses)))
        if self.since is not None:
            clauses.append(log.CreatedOn >= utc_naive(self.since))
        if self.until is not None:
            clauses.append(log.CreatedOn < utc_naive(self.until))
        return clauses


@dataclass(frozen=True)
class LogRow:
    """One batch call as the viewer shows it, with the details parsed out of AdditionalInformation."""

    created_on_utc: dt.datetime
    entity: str
    status: str
    batch_size: int | None
    http_response_code: int | None
    duration_ms: int | None
    exception_message: str | None
    endpoint_url: str | None
    run_id: str | None = None
    """The Dagster run that made the call; None for rows written before runs were recorded."""


def log_rows_query(query: LogQuery, newest_first: bool = True) -> sa.Select[Any]:
    """The SELECT behind `log_rows`, exposed so tests can compile it for SQL Server."""
    log = scheduler_log_table.c
    order = log.CreatedOn.desc() if newest_first else log.CreatedOn.asc()
    return (
        sa.select(log.CreatedOn, log.Activity, log.Status, log.AdditionalInformation, log.ExceptionMessage)
        .where(*query.where())
        .order_by(order, log.ID)
        .limit(query.limit)
    )


def _details(raw: str | None) -> dict[str, Any]:
    """AdditionalInformation as a dict; a row another writer filled with non-JSON shows no details."""
    try:
        details = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return details if isinstance(details, dict) else {}


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def log_rows(log_engine: sa.Engine, query: LogQuery, newest_first: bool = True) -> list[LogRow]:
    """This job's SchedulerLog rows matching `query`, newest first unless asked otherwise."""
    with log_engine.connect() as conn:
        rows = conn.execute(log_rows_query(query, newest_first)).all()
    result: list[LogRow] = []
    for created_on, activity_text, status, additional, exception_message in rows:
        details = _details(additional)
        result.append(
            LogRow(
                created_on_utc=created_on,
                entity=str(activity_text).removeprefix(ACTIVITY_PREFIX),
                status=status,
                batch_size=_optional_int(details.get("BatchSize")),
                http_response_code=_optional_int(details.get("HttpResponseCode")),
                duration_ms=_optional_int(details.get("DurationMs")),
                exception_message=exception_message or details.get("ExceptionMessage"),
                endpoint_url=details.get("EndpointUrl"),
                run_id=_optional_str(details.get(RUN_ID)),
            )
        )
    return result


@dataclass
class CallCounts:
    """An entity's batch calls in a time range: how many, how many failed, when one last succeeded."""

    calls: int = 0
    failed: int = 0
    last_success_utc: dt.datetime | None = None

    @property
    def success_rate(self) -> float | None:
        """Share of calls that succeeded, 0..1; None when there were no calls."""
        return (self.calls - self.failed) / self.calls if self.calls else None


def call_counts_query(query: LogQuery) -> sa.Select[Any]:
    """Calls per Activity and Status with the latest CreatedOn: one GROUP BY, however many rows."""
    log = scheduler_log_table.c
    return (
        sa.select(log.Activity, log.Status, sa.func.count().label("calls"), sa.func.max(log.CreatedOn))
        .where(*query.where())
        .group_by(log.Activity, log.Status)
    )


def call_counts(
    log_engine: sa.Engine,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    entities: Sequence[str] = (),
) -> dict[str, CallCounts]:
    """Batch calls per entity between `since` and `until` (naive UTC or aware); every asked entity appears."""
    query = LogQuery(entities=entities, since=since, until=until)
    counts = {name: CallCounts() for name in referenced_entities(entities)}
    with log_engine.connect() as conn:
        for activity_text, status, calls, latest in conn.execute(call_counts_query(query)):
            entity = counts[str(activity_text).removeprefix(ACTIVITY_PREFIX)]
            entity.calls += int(calls)
            if status == SUCCESS:
                entity.last_success_utc = latest
            elif status == FAILURE:
                entity.failed += int(calls)
    return counts


class EntitySummary(TypedDict):
    """The figures `entity_summary` returns; all are plain values, ready to become asset metadata."""

    calls: int
    failed_calls: int
    call_success_rate: float | None
    last_success_utc: str | None
    rejected_records: int


def rejected_untracked_query(entity: str) -> sa.Select[Any]:
    """Records of `entity` the API refused (one row each) that are still not tracked (not delivered since)."""
    rejected = rejected_table.c
    tracked = (
        sa.select(tracking_table.c.EntityId)
        .where(tracking_table.c.EntityType == rejected.EntityType)
        .where(tracking_table.c.EntityId == rejected.EntityId)
    )
    return (
        sa.select(sa.func.count()).select_from(rejected_table).where(rejected.EntityType == entity, ~sa.exists(tracked))
    )


def entity_summary(log_engine: sa.Engine, entity: str, since: dt.datetime | None = None) -> EntitySummary:
    """Success rate of the entity's calls, its last successful call, and its refused records not yet delivered."""
    counts = call_counts(log_engine, since=since, entities=[entity])[entity]
    with log_engine.connect() as conn:
        rejected = int(conn.execute(rejected_untracked_query(entity)).scalar_one())
    rate = counts.success_rate
    return {
        "calls": counts.calls,
        "failed_calls": counts.failed,
        "call_success_rate": None if rate is None else round(rate, 4),
        "last_success_utc": None if counts.last_success_utc is None else counts.last_success_utc.isoformat(),
        "rejected_records": rejected,
    }


@dataclass(frozen=True)
class PendingCount:
    """Records of one entity in its source that are not tracked yet: what the next run would send."""

    entity: str
    rows_found: int = 0
    already_tracked: int = 0
    pending: int | None = None
    error: str | None = None


def pending_count(plan: EntitySyncPlan, source: sa.Engine, tracking: TrackingStore) -> PendingCount:
    """Scan the entity's source the way a sync does (keyset pages, tracked lookups), sending nothing."""
    entity = plan.entity_type
    counts = ScanCounts()
    if plan.table is None:
        return PendingCount(entity, error=f"reads {plan.source_name}: its records are counted by the API only")
    try:
        pages = read_pages(source, plan.table, [plan.key_column], plan.key_column, plan.batch_size)
        untracked = untracked_pages(
            pages,
            key_column=plan.key_column,
            key_index=0,
            key_type=plan.spec.field(plan.key_column).type,
            tracked_among=SEND_UNTRACKED.already_sent(entity, tracking),
            counts=counts,
        )
        for _ in untracked:
            pass
    except (SourceUnavailable, TrackingUnavailable) as exc:
        return PendingCount(entity, error=str(exc))
    return PendingCount(entity, counts.rows_found, counts.already_tracked, counts.rows_found - counts.already_tracked)


def pending_counts(
    plans: Sequence[EntitySyncPlan], engines: Mapping[str, sa.Engine], log_columns: Mapping[str, str]
) -> list[PendingCount]:
    """`pending_count` of each plan (from `entity_plan`), with `engines` keyed like the resources."""
    tracking = TrackingStore(engines["log_db"], SchedulerLogWriter(log_columns))
    return [pending_count(plan, engines[plan.spec.source_db or "log_db"], tracking) for plan in plans]


@dataclass(frozen=True)
class PendingRecord:
    """A record of a create/update entity in its source, neither delivered as it is now nor in the retry queue:
    what the next run would send (or hold back, or refuse), and why it was not sent yet."""

    entity: str
    entity_id: str
    reason: str


def pending_records(plan: EntitySyncPlan, source: sa.Engine, log_engine: sa.Engine, limit: int) -> list[PendingRecord]:
    """Read the entity's source table and classify its records as a run would (mapping, row hash, references),
    sending and writing nothing; records in the retry queue are left out (they are Queued or Dead)."""
    entity = plan.entity_type
    if plan.table is None:
        reads = f"reads {plan.source_name}: its pending records are known to the API only"
        return [PendingRecord(entity, "", reads)]
    hashes = RowHashStore(log_engine)
    references = ReferenceCheck(plan.references, hashes) if plan.references else None
    queued = frozenset(queue_ids(log_engine, entity))
    sink = plan.spec.record_sink
    update_at = sink.id_field if sink is not None and not sink.create else None
    columns = [f.name for f in plan.spec.fields]
    reader = SqlTableSource(source, plan.table, columns, plan.key_column, plan.batch_size)
    batches = untracked_batches(
        reader.pages(),
        key_column=plan.key_column,
        key_index=columns.index(plan.key_column),
        key_type=plan.spec.field(plan.key_column).type,
        tracked_among=lambda entity_ids: set(),
        records=RecordBuilder(plan.spec, plan.key_column),
        batch_size=plan.batch_size,
        counts=ScanCounts(),
    )
    found: list[PendingRecord] = []
    for batch in batches:
        planned = changes_of(batch, plan.mapping, hashes, entity, ChangeCounts(), references, queued, update_at)
        found.extend(
            PendingRecord(entity, change.entity_id, "new: never sent" if change.is_new else "changed since last sent")
            for change in planned.changes
        )
        found.extend(
            PendingRecord(entity, entity_id, f"held back: {why}") for entity_id, why in planned.held_back.items()
        )
        found.extend(
            PendingRecord(entity, refusal.entity_id, f"would be refused: {refusal.reason}")
            for refusal in planned.refused
        )
        if len(found) >= limit:
            break
    return sorted(found[:limit], key=lambda record: record.entity_id)
