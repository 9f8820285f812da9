"""A sync's logs older than `retention.days` are purged by its scheduled `<sync>_retention` job: only its own
rows and its customers', in chunks SQL Server takes, the rows purged per table on the job's op."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from sync_pipeline.definitions import build_definitions, shared_definitions
from sync_pipeline.engine.state.retention import LOG_RETENTION, PURGE_CHUNK_ROWS, chunk_delete, purge_older_than
from sync_pipeline.engine.state.tracking import utc_now
from sync_pipeline.engine.tables import conflict_table, credential_use_table, history_table, scheduler_log_table
from sync_pipeline.orchestration.component import SyncComponent
from sync_pipeline.settings import Settings, SettingsError, parse_settings

from .conftest import SyncDatabases, raw_default_settings
from .retention_scenarios import (
    CUTOFF,
    NOTHING_PURGED,
    OURS,
    PURGED,
    PURGED_PER_TABLE,
    expected_remaining,
    remaining,
    seed_log_rows,
)
from .test_syncs import declared_per_customer

MSSQL = mssql.dialect(paramstyle="qmark")


@pytest.fixture
def log_db(databases: SyncDatabases) -> sa.Engine:
    """A Log database with its tables (SQLite)."""
    return databases.log


def test_rows_older_than_the_cutoff_go_and_newer_ones_and_every_other_syncs_stay(log_db: sa.Engine) -> None:
    seed_log_rows(log_db)

    purged = purge_older_than(log_db, LOG_RETENTION, [OURS], CUTOFF)

    assert purged == PURGED
    assert remaining(log_db) == expected_remaining()
    assert purge_older_than(log_db, LOG_RETENTION, [OURS], CUTOFF) == NOTHING_PURGED


def test_a_purge_larger_than_a_chunk_goes_in_chunks_each_its_own_statement(log_db: sa.Engine) -> None:
    seed_log_rows(log_db)
    deletes: list[str] = []
    sa.event.listen(
        log_db, "before_cursor_execute", lambda *args: deletes.append(args[2]) if "DELETE" in args[2] else None
    )

    purged = purge_older_than(log_db, LOG_RETENTION, [OURS], CUTOFF, chunk_rows=5)

    assert purged == dict.fromkeys(PURGED, 21)
    assert len(deletes) == len(PURGED) * 5  # 5 + 5 + 5 + 5 + 1 per table: the short chunk ends it
    assert remaining(log_db) == expected_remaining()


@pytest.mark.parametrize("target", LOG_RETENTION, ids=[target.table.name for target in LOG_RETENTION])
def test_a_chunk_compiles_for_sql_server_as_delete_top_within_its_parameter_limit(target: Any) -> None:
    entity_types = [f"crm.Entity{number}" for number in range(1000)]

    statement = chunk_delete(target, entity_types, CUTOFF, "mssql", PURGE_CHUNK_ROWS)
    compiled = statement.compile(dialect=MSSQL, compile_kwargs={"render_postcompile": True})
    sql = str(compiled)

    assert sql.startswith(f"DELETE TOP (4000) FROM [{target.table.name}] WHERE")
    assert "ESCAPE '/'" in sql  # an `_` in an EntityType is a plain character, not a wildcard
    assert len(compiled.positiontup or []) == 2 * 1000 + 1 <= 2100


def test_a_chunk_on_mariadb_is_a_delete_with_a_limit_and_elsewhere_a_delete_of_limited_keys() -> None:
    target = LOG_RETENTION[0]
    mysql_sql = str(chunk_delete(target, [OURS], CUTOFF, "mysql", 10).compile(dialect=sa.dialects.mysql.dialect()))
    sqlite_sql = str(chunk_delete(target, [OURS], CUTOFF, "sqlite", 10).compile(dialect=sa.dialects.sqlite.dialect()))

    assert re.search(r"LIMIT \S+$", mysql_sql) and "IN (SELECT" not in mysql_sql
    assert 'WHERE "TB_R_SYNC_CREDENTIAL_USE"."Id" IN (SELECT' in sqlite_sql and "LIMIT" in sqlite_sql


def test_the_purge_lists_the_credential_use_log_the_sync_s_scheduler_log_rows_its_history_and_conflicts() -> None:
    assert [(t.table, t.timestamp_column, t.entity_column) for t in LOG_RETENTION] == [
        (credential_use_table, "UsedAt", "EntityType"),
        (scheduler_log_table, "CreatedOn", "Activity"),
        (history_table, "ChangedOn", "EntityType"),
        (conflict_table, "LastSeenOn", "EntityType"),  # a conflict seen again stays
    ]
    assert LOG_RETENTION[1].label(OURS) == "Sync Batch: wf_pull.Workflows"


def test_a_sync_run_per_customer_purges_after_90_days_at_0330_utc_by_default() -> None:
    defs = dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared_per_customer()))

    schedule = defs.resolve_schedule_def("wf_pull_retention_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == (
        "30 3 * * *",
        "UTC",
        "wf_pull_retention",
    )
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def("wf_pull_retention")
    assert "older than 90 days" in str(job.description)
    assert job.graph.node_defs[0].required_resource_keys == {"wf_pull_log_db"}


def test_the_tamhr_push_keeps_its_scheduler_log_unless_its_settings_set_a_retention(settings: Settings) -> None:
    assert "tamhr_retention" not in build_definitions(settings).get_repository_def().job_names

    raw = raw_default_settings()
    raw["retention"] = {"days": 30, "cron": "0 4 * * 0", "timezone": "Asia/Jakarta", "enabled": False}
    kept = build_definitions(parse_settings(raw)).get_repository_def()
    schedule = kept.get_schedule_def("tamhr_retention_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 4 * * 0", "Asia/Jakarta")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"days": 0}, r"retention\.days: Input should be greater than or equal to 1 \(got 0\)"),
        ({"days": "90"}, r"retention\.days: Input should be a valid integer \(got '90'\)"),
        (
            {"cron": "every night"},
            r"retention\.cron: must be a standard 5-field cron expression, e\.g\. '0 3 \* \* \*'",
        ),
        ({"timezone": "Mars/Olympus"}, r"retention\.timezone: must be an IANA time zone name"),
        ({"keep": "forever"}, r"retention\.keep: is not a known setting"),
    ],
)
def test_a_bad_retention_setting_fails_the_load_naming_it_the_value_and_what_is_allowed(
    retention: dict[str, object], message: str
) -> None:
    raw = raw_default_settings()
    raw["retention"] = retention

    with pytest.raises(SettingsError, match=message):
        parse_settings(raw)


def test_the_retention_job_purges_the_sync_s_old_rows_and_reports_them_per_table(
    log_db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    cutoff = utc_now() - dt.timedelta(days=90)
    seed_log_rows(log_db, cutoff, newer_by=dt.timedelta(hours=1))  # the job's own cutoff is seconds later
    monkeypatch.setenv("SYNC_LOG_DB_URL", str(log_db.url))
    defs = dg.Definitions.merge(
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared_per_customer())), shared_definitions()
    )

    result = defs.resolve_job_def("wf_pull_retention").execute_in_process()

    assert result.success
    (output,) = [event for event in result.all_events if event.event_type_value == "STEP_OUTPUT"]
    metadata = output.step_output_data.metadata
    assert metadata["TB_R_SYNC_CREDENTIAL_USE"].value == PURGED_PER_TABLE
    assert metadata["SchedulerLog"].value == PURGED_PER_TABLE
    assert metadata["purged_before_utc"].value >= cutoff.replace(tzinfo=dt.UTC).timestamp()
    assert remaining(log_db, cutoff) == expected_remaining()
