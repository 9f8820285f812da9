"""The sync log viewer: this job's SchedulerLog rows, records still pending per entity, a per-entity summary.

SchedulerLog is TAMHR's shared table, so every query here selects this job's rows by their Activity,
`Sync Batch: <Entity>`. Queries are built on the typed tables and compile for SQL Server (TOP,
DATETIME2) as for the local databases. The alert sensor counts failed calls with `call_counts`, so
the viewer and the alerts never disagree about what failed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import sqlalchemy as sa

from sync_pipeline.defs.resources import DATABASE_URL_ENV_VARS
from sync_pipeline.engine.batching import ScanCounts, untracked_pages
from sync_pipeline.engine.entity_sync import EntitySyncPlan
from sync_pipeline.engine.scheduler_log import ACTIVITY_PREFIX, FAILURE, RUN_ID, SUCCESS, SchedulerLogWriter, activity
from sync_pipeline.engine.selection import SEND_UNTRACKED
from sync_pipeline.engine.source_pages import SourceUnavailable, read_pages
from sync_pipeline.engine.tracking import TrackingStore, TrackingUnavailable
from sync_pipeline.entities import ENTITIES_BY_NAME, TAMHR_ENTITIES
from sync_pipeline.resources.database import DatabaseUrlError, create_sync_engine
from sync_pipeline.tables import rejected_table, scheduler_log_table, tracking_table

if TYPE_CHECKING:  # pandas is for reporting only: a sync run, which imports this module, never loads it
    import pandas as pd

PENDING = "Pending"
STATUSES = (SUCCESS, FAILURE, PENDING)
FORMATS = ("table", "csv", "json")
DEFAULT_LIMIT = 200
TABLE_TEXT_WIDTH = 100
"""Longest exception message shown in `table` format; csv and json carry it whole."""
HOW_TO_SET_THE_ENVIRONMENT = (
    'for the demo run `eval "$(.venv/bin/sync-pipeline env)"` first; for a deployment set the SYNC_* '
    "variables the code location reads (SYNC_DEFAULT_DB_URL, SYNC_ESS_DB_URL, SYNC_LOG_DB_URL)"
)


class LogViewerError(Exception):
    """A problem the viewer reports to its user in one line: a missing variable, an unreadable database."""


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
    entity = plan.spec.name
    counts = ScanCounts()
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
    return [pending_count(plan, engines[plan.spec.source_db], tracking) for plan in plans]


def needed_databases(entities: Sequence[str], pending: bool) -> list[str]:
    """Resource keys of the databases a listing reads: the Log database, and the sources for Pending."""
    sources = {ENTITIES_BY_NAME[name].source_db for name in entities} if pending else set()
    return ["log_db", *sorted(sources)]


@contextmanager
def environment_engines(
    resource_keys: Iterable[str], environ: Mapping[str, str] = os.environ
) -> Iterator[dict[str, sa.Engine]]:
    """Engines from the variables the Dagster resources read (`SYNC_LOG_DB_URL`, ...), disposed on exit."""
    engines: dict[str, sa.Engine] = {}
    try:
        for key in resource_keys:
            env_var = DATABASE_URL_ENV_VARS[key]
            url = environ.get(env_var)
            if not url:
                raise LogViewerError(
                    f"{env_var} is not set: it holds the SQLAlchemy URL of {key}; {HOW_TO_SET_THE_ENVIRONMENT}"
                )
            try:
                engines[key] = create_sync_engine(url, env_var)
            except DatabaseUrlError as exc:
                raise LogViewerError(str(exc)) from None
        yield engines
    finally:
        for engine in engines.values():
            engine.dispose()


def log_frame(rows: Iterable[LogRow]) -> pd.DataFrame:
    """SchedulerLog rows as a table, one column per `LogRow` field."""
    import pandas as pd

    columns = list(LogRow.__dataclass_fields__)
    return pd.DataFrame([asdict(row) for row in rows], columns=columns, dtype=object)


def pending_frame(counts: Iterable[PendingCount]) -> pd.DataFrame:
    """Pending counts as a table, one row per entity."""
    import pandas as pd

    columns = list(PendingCount.__dataclass_fields__)
    return pd.DataFrame([asdict(count) for count in counts], columns=columns, dtype=object)


def render(frame: pd.DataFrame, output_format: str) -> str:
    """The frame as `table` (for people), `csv` or `json` (records); timestamps ISO 8601, in UTC."""
    import pandas as pd

    if output_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    as_table = output_format == "table"
    records = [
        {name: _cell(value, as_table) for name, value in record.items()} for record in frame.to_dict(orient="records")
    ]
    if output_format == "json":
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    cells = pd.DataFrame(records, columns=frame.columns)
    if output_format == "csv":
        return str(cells.to_csv(index=False, lineterminator="\n"))
    if cells.empty:
        return "(no rows)\n"
    return str(cells.to_string(index=False)) + "\n"


def _cell(value: object, as_table: bool) -> object:
    """One value as the format shows it: None for a missing value (blank in a table), ISO timestamps."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "" if as_table else None
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds") if as_table else value.isoformat()
    if hasattr(value, "item"):  # a numpy scalar from the frame: back to the plain Python value
        value = value.item()
    if as_table and isinstance(value, str) and len(value) > TABLE_TEXT_WIDTH:
        return value[: TABLE_TEXT_WIDTH - 1] + "…"
    return value
