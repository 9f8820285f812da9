"""A pull declared only in YAML: an API's pages into the application's own table, from the last mark on.

Workflows are read from a paginated HTTP API (page number, 50 a page, the mark sent as
`updated_since`) and upserted into a table of the application's database on their id, last write
wins by `updated_at`: an older copy never overwrites a newer row. The mark moves only after a read
that got every page: a page that failed on every attempt stops the entity, keeps the mark, and the
next run reads what it missed. No engine code knows this sync: everything about it is in the YAML.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from sync_pipeline.demo.receiver import Fault, ReceivingApi
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.tables import cursor_table, scheduler_log_table, tracking_table
from sync_pipeline.orchestration.component import SyncComponent
from sync_pipeline.resources.database import create_sync_engine

from .conftest import SERVERS, fresh_databases, materialized, table_rows

KEY = "workflows-key-19c2"
DEFS_YAML = """
type: sync_pipeline.orchestration.component.SyncComponent
attributes:
  name: workflows_pull
  entities:
    - name: Workflows
      source:
        kind: http_pages
        pagination: {style: page_number, page_size: 50, records_path: data}
        since_param: updated_since
      fields:
        - {name: id, type: int}
        - {name: name, length: 100}
        - {name: updated_at, type: datetime}
      mapping:
        zuora_id: {from: id}
        workflow_name: {from: name}
        updated_at: {from: updated_at}
      state: since_cursor
      cursor_field: updated_at
      sink: {kind: sql_upsert, db: app_db, key_columns: [zuora_id], timestamp_column: updated_at}
  settings:
    api:
      base_url: "{base_url}"
      api_key_env_var: WORKFLOWS_API_KEY
    retries: {max_attempts: 2, initial_delay_seconds: 0, max_delay_seconds: 1}
    databases: {app_db: APP_DB_URL, log_db: SYNC_LOG_DB_URL}
    entities:
      Workflows: {key_column: id, endpoint: workflows, target_table: app_workflows, batch_size: 50}
"""
START = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
ENTITY_TYPE = "workflows_pull.Workflows"


@pytest.fixture(params=sorted(SERVERS))
def databases(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The application's database and the Log database on one real server."""
    with fresh_databases(request.param, ("app_db", "log_db")) as urls:
        yield urls


def test_pages_are_upserted_from_the_mark_on_last_write_wins_and_a_failed_page_keeps_the_mark(
    databases: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = databases
    monkeypatch.setenv("APP_DB_URL", urls["app_db"])
    monkeypatch.setenv("SYNC_LOG_DB_URL", urls["log_db"])
    monkeypatch.setenv("WORKFLOWS_API_KEY", KEY)
    log = create_sync_engine(urls["log_db"])
    create_log_tables(log)
    app = create_sync_engine(urls["app_db"])
    workflows = sa.Table(
        "app_workflows",
        sa.MetaData(),
        sa.Column("zuora_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("workflow_name", sa.String(100), nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=True),
        sa.Column("notes", sa.String(100), nullable=True),  # the application's own column, never written
    )
    workflows.metadata.create_all(app)

    with ReceivingApi(api_key=KEY) as api:
        attributes = yaml.safe_load(DEFS_YAML.replace("{base_url}", api.records_url("")))["attributes"]
        defs = dg.build_defs_for_component(SyncComponent.resolve_from_dict(attributes))
        ids = api.collections.seed("workflows", [workflow(n, START + dt.timedelta(minutes=n)) for n in range(120)])

        first = run(defs)
        assert first.success
        assert materialized(first)["sent"] == 120
        assert (materialized(first)["inserted"], materialized(first)["updated"]) == (120, 0)
        assert "throttled" not in materialized(first)
        assert gets(api) == 3  # 50 + 50 + 20: a short page ends it
        stored = stored_rows(app, workflows)
        assert len(stored) == 120 and stored[int(ids[7])]["workflow_name"] == "Workflow 7"
        assert mark(log) == START + dt.timedelta(minutes=119)

        second = run(defs)  # nothing new: the record at the mark is read again and written nowhere
        assert materialized(second)["rows_found"] == 1
        assert materialized(second)["sent"] == 0 and materialized(second)["unchanged"] == 1
        assert "updated_since=2026-11-01T09%3A59%3A00%2B00%3A00" in api.collections.queries["workflows"][-1]
        assert stored_rows(app, workflows) == stored

        with app.begin() as conn:  # the application edited workflow 7 after Zuora's last change to it
            conn.execute(
                sa.update(workflows)
                .where(workflows.c.zuora_id == int(ids[7]))
                .values(workflow_name="Edited here", updated_at=(START + dt.timedelta(days=2)).replace(tzinfo=None))
            )
        api.collections.records["workflows"][ids[5]] = workflow(5, START + dt.timedelta(days=1), "Renamed 5")
        api.collections.records["workflows"][ids[7]] = workflow(7, START + dt.timedelta(days=1), "Older 7")
        (new_id,) = api.collections.seed("workflows", [workflow(120, START + dt.timedelta(days=1, minutes=1))])
        third = run(defs)
        assert materialized(third)["rows_found"] == 4  # the one at the mark, 5, 7 and the new one
        assert materialized(third)["sent"] == 2 and materialized(third)["unchanged"] == 2
        now = stored_rows(app, workflows)
        assert now[int(ids[5])]["workflow_name"] == "Renamed 5"
        assert now[int(ids[7])]["workflow_name"] == "Edited here"  # last write wins: the newer row stays
        assert now[int(new_id)]["workflow_name"] == "Workflow 120"
        assert mark(log) == START + dt.timedelta(days=1, minutes=1)

        for n in range(60):  # 60 changed: two pages, the second of which fails on both attempts
            api.collections.records["workflows"][ids[n]] = workflow(n, START + dt.timedelta(days=3, seconds=n), "v3")
        before = len(api.collections.calls["workflows"])
        api.fail_record_calls("workflows", {before + 2: 503, before + 3: 503})
        fourth = run(defs)
        assert not fourth.success
        assert "503" in str(materialized(fourth)["outcome"])
        assert mark(log) == START + dt.timedelta(days=1, minutes=1)  # kept: page 2 was never read
        assert sum(row["workflow_name"] == "v3" for row in stored_rows(app, workflows).values()) == 50

        before = len(api.collections.calls["workflows"])
        api.fail_record_calls("workflows", {before + 1: Fault(429, {"Retry-After": "0"})})  # rate limited once
        fifth = run(defs)
        assert fifth.success
        assert materialized(fifth)["throttled"] == 1
        assert (materialized(fifth)["inserted"], materialized(fifth)["updated"]) == (0, 10)
        assert sum(row["workflow_name"] == "v3" for row in stored_rows(app, workflows).values()) == 60
        assert mark(log) == START + dt.timedelta(days=3, seconds=59)

    reads = [row for row in table_rows(log, scheduler_log_table) if row["Activity"] == f"Sync Batch: {ENTITY_TYPE}"]
    assert sum(row["Status"] == "Failure" for row in reads) == 3  # one row per failed attempt: 503, 503, 429
    assert not any(KEY in str(row) for row in table_rows(log, scheduler_log_table))
    assert table_rows(log, tracking_table) == []  # a pull tracks nothing: its state is the mark
    assert all(row["notes"] is None for row in stored_rows(app, workflows).values())
    app.dispose()
    log.dispose()


def workflow(n: int, updated_at: dt.datetime, name: str | None = None) -> dict[str, Any]:
    return {"name": name or f"Workflow {n}", "updated_at": updated_at.isoformat()}


def run(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("workflows_pull_sync_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def gets(api: ReceivingApi) -> int:
    return sum(method == "GET" for method, _, _ in api.collections.calls["workflows"])


def mark(log: sa.Engine) -> dt.datetime:
    (row,) = table_rows(log, cursor_table)
    assert row["EntityType"] == ENTITY_TYPE
    return dt.datetime.fromisoformat(row["CursorValue"])


def stored_rows(engine: sa.Engine, table: sa.Table) -> dict[int, dict[str, Any]]:
    return {row["zuora_id"]: row for row in table_rows(engine, table)}
