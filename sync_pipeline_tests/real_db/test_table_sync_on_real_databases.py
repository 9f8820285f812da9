"""A sync between two databases declared only in YAML: a since-cursor read, a value map, a SQL update sink.

Completed field-service orders are read from their own database from the last mark on, their status
mapped, and the matching tickets of another database updated (two columns, nothing else, no insert).
An order matching no ticket is quarantined with its reason; the mark moves past it, never past an
unread one. No engine code knows this sync: everything about it is in the defs.yaml below.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.tables import cursor_table, rejected_table, scheduler_log_table, source_table
from sync_pipeline.orchestration.component import SyncComponent
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import parse_settings

from .conftest import SERVERS, fresh_databases, materialized, table_rows

DEFS_YAML = """
type: sync_pipeline.orchestration.component.SyncComponent
attributes:
  name: status_back
  entities:
    - name: CompletedOrders
      source_db: field_db
      fields:
        - {name: Id, type: guid}
        - {name: Status, length: 20}
        - {name: CompletedOn, type: datetime}
      mapping:
        ticket_id: {from: Id}
        status: {from: Status, value_map: {COMPLETED: closed, VALIDATED: closed, CANCELLED: cancelled}}
        closed_on: {from: CompletedOn}
      state: since_cursor
      cursor_field: CompletedOn
      sink: {kind: sql_update, db: crm_db, key_columns: [ticket_id], columns: [status, closed_on]}
  settings:
    databases: {field_db: FIELD_DB_URL, crm_db: CRM_DB_URL, log_db: SYNC_LOG_DB_URL}
    entities:
      CompletedOrders: {table: completed_orders, target_table: tickets, batch_size: 4}
"""
START = dt.datetime(2026, 11, 1, 8, 0)


@pytest.fixture(params=sorted(SERVERS))
def databases(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The field-service, CRM and Log databases on one real server."""
    with fresh_databases(request.param, ("field_db", "crm_db", "log_db")) as urls:
        yield urls


def test_completed_orders_update_only_their_tickets_from_the_mark_on_and_a_stray_one_is_quarantined(
    databases: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = databases
    attributes = yaml.safe_load(DEFS_YAML)["attributes"]
    component = SyncComponent.resolve_from_dict(attributes)
    defs = dg.build_defs_for_component(component)
    monkeypatch.setenv("FIELD_DB_URL", urls["field_db"])
    monkeypatch.setenv("CRM_DB_URL", urls["crm_db"])
    monkeypatch.setenv("SYNC_LOG_DB_URL", urls["log_db"])
    log = create_sync_engine(urls["log_db"])
    create_log_tables(log)

    sync = component.sync_spec(tmp_path)
    orders = source_table(
        sync.entities[0], parse_settings(attributes["settings"], sync=sync).entities["CompletedOrders"]
    )
    field = create_sync_engine(urls["field_db"])
    orders.metadata.create_all(field)
    crm = create_sync_engine(urls["crm_db"])
    tickets = sa.Table(
        "tickets",
        sa.MetaData(),
        sa.Column("ticket_id", sa.String(36), primary_key=True),
        sa.Column("title", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("closed_on", sa.DateTime, nullable=True),
    )
    tickets.metadata.create_all(crm)
    ids = [uuid.uuid4() for _ in range(10)]
    with crm.begin() as conn:
        conn.execute(
            sa.insert(tickets), [{"ticket_id": str(i), "title": f"T{n}", "status": "open"} for n, i in enumerate(ids)]
        )
    stray = uuid.uuid4()
    first = [(ids[n], "COMPLETED" if n % 2 else "CANCELLED", START + dt.timedelta(hours=n)) for n in range(5)]
    with field.begin() as conn:
        conn.execute(sa.insert(orders), [{"Id": i, "Status": s, "CompletedOn": t} for i, s, t in first])
        conn.execute(sa.insert(orders), [{"Id": stray, "Status": "VALIDATED", "CompletedOn": START}])

    result = run(defs)
    assert materialized(result)["rows_found"] == 6
    assert materialized(result)["sent"] == 5
    assert materialized(result)["rejected"] == 1
    stored = rows_by(crm, tickets, "ticket_id")
    assert [stored[str(i)]["status"] for i in ids[:5]] == ["cancelled", "closed", "cancelled", "closed", "cancelled"]
    assert stored[str(ids[3])]["closed_on"] == START + dt.timedelta(hours=3)
    assert all(stored[str(i)]["status"] == "open" and stored[str(i)]["closed_on"] is None for i in ids[5:])
    assert [row["title"] for row in stored.values()] == [f"T{n}" for n in range(10)]  # never touched
    assert str(stray) not in stored  # an update sink never inserts
    (quarantined,) = table_rows(log, rejected_table)
    assert quarantined["EntityType"] == "status_back.CompletedOrders"
    assert quarantined["EntityId"] == str(stray)
    assert "no row of tickets has key" in quarantined["Reason"]
    (mark,) = table_rows(log, cursor_table)
    assert mark["EntityType"] == "status_back.CompletedOrders"
    assert dt.datetime.fromisoformat(mark["CursorValue"]) == START + dt.timedelta(hours=4)

    result = run(defs)  # nothing new: the order at the mark is read again, and the queued stray by its key
    assert (materialized(result)["rows_found"], materialized(result)["rejected"]) == (2, 1)
    assert rows_by(crm, tickets, "ticket_id") == stored

    later = [(ids[n], "VALIDATED", START + dt.timedelta(days=1, hours=n)) for n in (6, 7)]
    with field.begin() as conn:
        conn.execute(sa.insert(orders), [{"Id": i, "Status": s, "CompletedOn": t} for i, s, t in later])
    result = run(defs)
    assert materialized(result)["rows_found"] == 4  # the two new ones, the one at the mark, the queued stray
    now = rows_by(crm, tickets, "ticket_id")
    assert [now[str(ids[n])]["status"] for n in (6, 7)] == ["closed", "closed"]
    changed = (str(ids[6]), str(ids[7]))
    assert {key: row for key, row in now.items() if key not in changed} == {
        key: row for key, row in stored.items() if key not in changed
    }
    (mark,) = table_rows(log, cursor_table)
    assert dt.datetime.fromisoformat(mark["CursorValue"]) == START + dt.timedelta(days=1, hours=7)
    writes = [
        row
        for row in table_rows(log, scheduler_log_table)
        if row["Activity"] == "Sync Batch: status_back.CompletedOrders"
    ]
    assert writes and all(row["Status"] == "Success" for row in writes)
    for engine in (log, field, crm):
        engine.dispose()


def run(defs: dg.Definitions) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def("status_back_sync_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    return result


def rows_by(engine: sa.Engine, table: sa.Table, key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in sorted(table_rows(engine, table), key=lambda row: row["title"])}
