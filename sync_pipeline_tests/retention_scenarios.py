"""What a retention purge must do on every database: the same Log rows on SQLite and the real servers.

The sync `wf_pull` (EntityType `wf_pull.Workflows`, `_` being a LIKE wildcard) keeps 90 days. Its rows,
its customers' rows, another sync's rows, a sync whose name differs only where the `_` is, and another
TAMHR application's SchedulerLog rows, each older and newer than the cutoff.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import sqlalchemy as sa

from sync_pipeline.engine.audit.scheduler_log import ApiCall, SchedulerLogWriter
from sync_pipeline.engine.tables import conflict_table, credential_use_table, history_table, scheduler_log_table

NOW = dt.datetime(2026, 12, 1, 3, 30)
CUTOFF = NOW - dt.timedelta(days=90)
OURS = "wf_pull.Workflows"
OLD_ROWS_PER_CUSTOMER = 7
KEPT = {  # EntityTypes whose rows are not ours, old or new
    "crm.Users": "another sync",
    "wfXpull.Workflows/acme": "a sync whose name only a LIKE wildcard matches",
    "wf_pull.WorkflowsArchive/acme": "an entity whose name starts with ours",
}


def seed_log_rows(engine: sa.Engine, cutoff: dt.datetime = CUTOFF, newer_by: dt.timedelta = dt.timedelta(0)) -> None:
    """Rows of ours and of others in each purged table (credential use, SchedulerLog, history, conflicts): old
    ones from a microsecond before `cutoff` back, new ones at `cutoff` (exactly, unless `newer_by`)."""
    old, new = cutoff - dt.timedelta(microseconds=1), cutoff + newer_by
    writer = SchedulerLogWriter({**LOG_CONSTANTS}, run_id="run-1")
    rows: dict[sa.Table, list[dict[str, object]]] = {table: [] for table in (*_ROW_OF, scheduler_log_table)}

    def add(entity_type: str, at: dt.datetime) -> None:
        for table, row_of in _ROW_OF.items():
            rows[table].append(row_of(entity_type, at, len(rows[table])))
        rows[scheduler_log_table].append(writer.row(entity_type, _CALL, now=at))

    ours = [OURS, f"{OURS}/acme", f"{OURS}/beta"]
    for entity_type in ours:
        for number in range(OLD_ROWS_PER_CUSTOMER):
            add(entity_type, old - dt.timedelta(days=number))
    for entity_type in [*ours, *KEPT]:
        add(entity_type, new)
    for entity_type in KEPT:
        add(entity_type, old)
    other_application = {**writer.row(OURS, _CALL, now=old), "Activity": "Payroll Export", "ApplicationName": "HR"}
    rows[scheduler_log_table].append(other_application)
    with engine.begin() as conn:
        for table, table_rows in rows.items():
            conn.execute(sa.insert(table), table_rows)


def remaining(engine: sa.Engine, cutoff: dt.datetime = CUTOFF) -> dict[str, Counter[str]]:
    """Rows left per table, counted by entity (SchedulerLog: by Activity), older than `cutoff` and not apart."""
    left: dict[str, Counter[str]] = {}
    with engine.connect() as conn:
        for table, (entity, at) in _COUNTED.items():
            rows = conn.execute(sa.select(table.c[entity], table.c[at])).all()
            left[table.name] = Counter(f"{name} {'old' if when < cutoff else 'new'}" for name, when in rows)
    return left


def expected_remaining() -> dict[str, Counter[str]]:
    """What the purge leaves: every new row, and the old rows that are not ours."""
    ours_new = [OURS, f"{OURS}/acme", f"{OURS}/beta"]
    kept = Counter([f"{name} new" for name in [*ours_new, *KEPT]] + [f"{name} old" for name in KEPT])
    activities = Counter({f"Sync Batch: {key}": count for key, count in kept.items()})
    activities["Payroll Export old"] = 1
    return {table.name: activities if table is scheduler_log_table else kept for table in _COUNTED}


PURGED_PER_TABLE = 3 * OLD_ROWS_PER_CUSTOMER
"""Ours (the entity, acme and beta), each with its old rows."""

LOG_CONSTANTS = {
    "ApplicationName": "TAMHR",
    "LogID": "SYNC_PIPELINE",
    "LogCategory": "Scheduler",
    "ApplicationModule": "ThirdPartySync",
    "IPHostName": "test-host",
    "CreatedBy": "sync_pipeline",
}
_CALL = ApiCall("http://127.0.0.1:9/v1/workflows", 50, 200, 12)


def _use(entity_type: str, at: dt.datetime, number: int) -> dict[str, object]:
    return {
        "EntityType": entity_type,
        "Customer": entity_type.rpartition("/")[2],
        "ClientId": "client-id-1",
        "Event": "requested",
        "UsedAt": at,
        "Calls": 3,
        "RunId": "run-1",
    }


def _change(entity_type: str, at: dt.datetime, number: int) -> dict[str, object]:
    return {
        "EntityType": entity_type,
        "RecordKey": str(number),
        "Change": "updated",
        "OldValues": '{"name": "a"}',
        "NewValues": '{"name": "b"}',
        "RunId": "run-1",
        "ChangedOn": at,
        "AppliedOn": at,
    }


def _conflict(entity_type: str, at: dt.datetime, number: int) -> dict[str, object]:
    return {
        "EntityType": entity_type,
        "RecordKey": str(number),
        "Reason": "updated_at older than the stored row's, content differs",
        "StoredValues": '{"name": "a"}',
        "IncomingValues": '{"name": "b"}',
        "Seen": 1,
        "FirstSeenOn": at,
        "LastSeenOn": at,
        "RunId": "run-1",
    }


_ROW_OF = {credential_use_table: _use, history_table: _change, conflict_table: _conflict}
"""A row of each purged table (but SchedulerLog) for an entity at a time; `number` keeps keys apart."""
_COUNTED = {
    credential_use_table: ("EntityType", "UsedAt"),
    scheduler_log_table: ("Activity", "CreatedOn"),
    history_table: ("EntityType", "ChangedOn"),
    conflict_table: ("EntityType", "LastSeenOn"),
}
PURGED = {table.name: PURGED_PER_TABLE for table in _COUNTED}
"""What a purge at the cutoff deletes from each table."""
NOTHING_PURGED = dict.fromkeys(PURGED, 0)
