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
from sync_pipeline.engine.tables import credential_use_table, scheduler_log_table

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
    """Rows of ours and of others in TB_R_SYNC_CREDENTIAL_USE and SchedulerLog: old ones from a microsecond before
    `cutoff` back, new ones at `cutoff` (exactly, unless `newer_by`)."""
    old, new = cutoff - dt.timedelta(microseconds=1), cutoff + newer_by
    uses: list[dict[str, object]] = []
    calls: list[dict[str, object]] = []
    writer = SchedulerLogWriter({**LOG_CONSTANTS}, run_id="run-1")
    ours = [OURS, f"{OURS}/acme", f"{OURS}/beta"]
    for entity_type in ours:
        for number in range(OLD_ROWS_PER_CUSTOMER):
            uses.append(_use(entity_type, old - dt.timedelta(days=number)))
            calls.append(writer.row(entity_type, _CALL, now=old - dt.timedelta(days=number)))
    for entity_type in [*ours, *KEPT]:
        uses.append(_use(entity_type, new))
        calls.append(writer.row(entity_type, _CALL, now=new))
    for entity_type in KEPT:
        uses.append(_use(entity_type, old))
        calls.append(writer.row(entity_type, _CALL, now=old))
    other_application = {**writer.row(OURS, _CALL, now=old), "Activity": "Payroll Export", "ApplicationName": "HR"}
    with engine.begin() as conn:
        conn.execute(sa.insert(credential_use_table), uses)
        conn.execute(sa.insert(scheduler_log_table), [*calls, other_application])


def remaining(engine: sa.Engine, cutoff: dt.datetime = CUTOFF) -> dict[str, Counter[str]]:
    """Rows left per table, counted by entity (SchedulerLog: by Activity), older than `cutoff` and not apart."""
    left: dict[str, Counter[str]] = {}
    with engine.connect() as conn:
        uses = conn.execute(sa.select(credential_use_table.c.EntityType, credential_use_table.c.UsedAt)).all()
        calls = conn.execute(sa.select(scheduler_log_table.c.Activity, scheduler_log_table.c.CreatedOn)).all()
    for table, rows in (("TB_R_SYNC_CREDENTIAL_USE", uses), ("SchedulerLog", calls)):
        left[table] = Counter(f"{name} {'old' if at < cutoff else 'new'}" for name, at in rows)
    return left


def expected_remaining() -> dict[str, Counter[str]]:
    """What the purge leaves: every new row, and the old rows that are not ours."""
    ours_new = [OURS, f"{OURS}/acme", f"{OURS}/beta"]
    kept = Counter([f"{name} new" for name in [*ours_new, *KEPT]] + [f"{name} old" for name in KEPT])
    activities = Counter({f"Sync Batch: {key}": count for key, count in kept.items()})
    activities["Payroll Export old"] = 1
    return {"TB_R_SYNC_CREDENTIAL_USE": kept, "SchedulerLog": activities}


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


def _use(entity_type: str, at: dt.datetime) -> dict[str, object]:
    return {
        "EntityType": entity_type,
        "Customer": entity_type.rpartition("/")[2],
        "ClientId": "client-id-1",
        "Event": "requested",
        "UsedAt": at,
        "Calls": 3,
        "RunId": "run-1",
    }
