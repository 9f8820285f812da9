"""The SQL sinks on SQLite, and the statements SQL Server would be sent, compiled for mssql."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sync_pipeline.engine.sinks.sql_rows import SqlSinkUnavailable, TableColumns
from sync_pipeline.engine.sinks.sql_update import SqlUpdateSink, update_statement
from sync_pipeline.engine.sinks.sql_upsert import SqlUpsertSink, upsert_statement
from sync_pipeline.engine.state.change_history import ChangedRow, ChangeHistory, ConflictingRow
from sync_pipeline.engine.tables import conflict_table, history_table, log_metadata

from .sql_sink_scenarios import (
    SCENARIOS,
    T0,
    WORK_ORDER_STATUSES,
    seed_work_orders,
    status_sink,
    target_metadata,
    work_orders,
    workflow,
    workflow_sink,
    workflows,
)
from .test_mssql_rules import MAX_PARAMETERS, MSSQL, StatementRecorder


@pytest.fixture
def target(tmp_path: Path) -> Iterator[sa.Engine]:
    """A SQLite file holding empty target tables."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'target.db'}", hide_parameters=True)
    target_metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def recorder(target: sa.Engine) -> Iterator[StatementRecorder]:
    """Every statement run on the target, to compile for SQL Server."""
    recorder = StatementRecorder()
    sa.event.listen(target, "before_execute", recorder.before_execute)
    yield recorder
    sa.event.remove(target, "before_execute", recorder.before_execute)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_the_sql_sinks_on_sqlite(target: sa.Engine, scenario: Callable[[sa.Engine], None]) -> None:
    scenario(target)


def test_an_upsert_key_must_be_the_tables_primary_or_unique_key(target: sa.Engine) -> None:
    with pytest.raises(ValueError, match="key_columns: workflow_id are not the primary key or a unique constraint"):
        SqlUpsertSink(target, workflows, ["workflow_id"], "updated_at")


def test_a_timestamp_column_must_be_a_column_of_the_table(target: sa.Engine) -> None:
    with pytest.raises(ValueError, match="timestamp_column: 'modified' is not a non-key column of zuora_workflow"):
        SqlUpsertSink(target, workflows, ["tenant", "workflow_id"], "modified")


def test_columns_to_update_must_be_columns_of_the_table_and_not_the_key(target: sa.Engine) -> None:
    with pytest.raises(ValueError, match=r"columns: state not in chr_work_order \(its columns: order_id, title"):
        SqlUpdateSink(target, work_orders, ["order_id"], ["state"])
    with pytest.raises(ValueError, match="columns: order_id are key columns"):
        SqlUpdateSink(target, work_orders, ["order_id"], ["order_id", "status"])


def test_a_record_with_a_column_the_table_lacks_or_without_a_key_is_refused_naming_the_column(
    target: sa.Engine,
) -> None:
    counts = workflow_sink(target).write(
        [
            workflow(1, colour="red"),
            workflow(2) | {"tenant": None},
            {"tenant": "acme", "workflow_id": 3, "updated_at": T0},
            workflow(4),
        ]
    )

    assert counts.inserted == 1
    assert [(r.key, r.column, r.reason) for r in counts.refused] == [
        (("acme", 1), "colour", "not a column of zuora_workflow"),
        ((None, 2), "tenant", "NULL in a key column"),
        (("acme", 3), "name", "missing from the record"),
    ]


def test_a_missing_target_table_stops_the_sink_with_its_name_and_no_row_data(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}", hide_parameters=True)

    with pytest.raises(SqlSinkUnavailable) as raised:
        workflow_sink(engine).write([workflow(1, name="Secret plan")])

    assert str(raised.value) == "cannot read zuora_workflow: OperationalError: no such table: zuora_workflow"


def test_sql_server_gets_one_merge_per_row_with_last_write_wins_and_datetime2(target: sa.Engine) -> None:
    columns = TableColumns(workflows, ["tenant", "workflow_id"], list(workflows.c.keys()))
    upsert = upsert_statement("mssql", columns, workflows.c.updated_at)

    compiled = upsert.statement.compile(dialect=MSSQL)

    assert str(compiled) == (
        "MERGE INTO zuora_workflow WITH (HOLDLOCK) AS target "
        "USING (VALUES (?, ?, ?, ?, ?)) AS source (tenant, workflow_id, updated_at, name, version) "
        "ON target.tenant = source.tenant AND target.workflow_id = source.workflow_id "
        "WHEN MATCHED AND (target.updated_at IS NULL OR source.updated_at > target.updated_at) "
        "THEN UPDATE SET updated_at = source.updated_at, name = source.name, version = source.version "
        "WHEN NOT MATCHED THEN INSERT (tenant, workflow_id, updated_at, name, version) "
        "VALUES (source.tenant, source.workflow_id, source.updated_at, source.name, source.version);"
    )
    assert upsert.parameters(workflow(9)) == {"p0": "acme", "p1": 9, "p2": T0, "p3": "Invoice run 9", "p4": 1}
    bound = [compiled.binds[name].type.compile(dialect=MSSQL) for name in compiled.positiontup or []]
    assert bound == ["NVARCHAR(20)", "INTEGER", "DATETIME2", "NVARCHAR(100)", "INTEGER"]


def test_sql_server_identifiers_in_the_merge_are_quoted() -> None:
    table = sa.Table(
        "Work Order",
        sa.MetaData(),
        sa.Column("Order Id", sa.Unicode(36), primary_key=True),
        sa.Column("Modified", sa.DateTime),
        schema="chr",
    )

    sql = str(upsert_statement("mssql", TableColumns(table, ["Order Id"], ["Modified"]), table.c.Modified).statement)

    assert sql.startswith("MERGE INTO chr.[Work Order] WITH (HOLDLOCK) AS target USING (VALUES (:p0, :p1)) ")
    assert "ON target.[Order Id] = source.[Order Id] WHEN MATCHED" in sql


def test_mariadb_assigns_the_timestamp_last_so_the_other_columns_compare_with_the_stored_one() -> None:
    columns = TableColumns(workflows, ["tenant", "workflow_id"], ["updated_at", "name", "version"])

    sql = str(upsert_statement("mariadb", columns, workflows.c.updated_at).statement.compile(dialect=mysql.dialect()))

    assert re.findall(r"(\w+) = CASE WHEN", sql) == ["name", "version", "updated_at"]
    assert "(zuora_workflow.updated_at IS NULL OR VALUES(updated_at) > zuora_workflow.updated_at)" in sql


def test_3000_upserts_look_stored_rows_up_in_chunks_under_2100_parameters_on_sql_server(
    target: sa.Engine, recorder: StatementRecorder
) -> None:
    workflow_sink(target).write([workflow(n) for n in range(3000)])

    lookups = [e.on_sql_server()[1] for e in recorder.executions if isinstance(e.statement, sa.Select)]
    assert lookups == [1500] * 6  # 500 rows of tenant, workflow_id, updated_at
    assert max(lookups) < MAX_PARAMETERS


def test_3000_status_updates_run_statements_sql_server_accepts(target: sa.Engine, recorder: StatementRecorder) -> None:
    seed_work_orders(target, 3000)
    recorder.forget()

    counts = status_sink(target).write(
        [{"order_id": f"WO-{n:06d}", "status": "COMPLETED", "completed_on": T0} for n in range(3000)]
    )

    assert counts.updated == 3000
    updates = [e for e in recorder.executions if isinstance(e.statement, sa.Update)]
    assert [len(e.parameter_sets) for e in updates] == [3000]
    assert updates[0].on_sql_server()[1] == 3  # two columns set, one key
    assert recorder.violations() == []


def test_the_update_compiles_to_one_typed_update_per_row_on_sql_server() -> None:
    statement = update_statement(TableColumns(work_orders, ["order_id"], ["status", "completed_on"]))

    compiled = statement.compile(dialect=MSSQL)

    assert str(compiled) == ("UPDATE chr_work_order SET status=?, completed_on=? WHERE chr_work_order.order_id = ?")
    bound: list[Any] = [compiled.binds[name].type.compile(dialect=MSSQL) for name in compiled.positiontup or []]
    assert bound == ["NVARCHAR(20)", "DATETIME2", "NVARCHAR(36)"]


def test_a_forward_only_update_compiles_on_sql_server_with_its_condition_on_the_stored_status() -> None:
    columns = TableColumns(work_orders, ["order_id"], ["status", "completed_on"])

    compiled = update_statement(columns, WORK_ORDER_STATUSES).compile(dialect=MSSQL)

    assert str(compiled) == (
        "UPDATE chr_work_order SET status=?, completed_on=? WHERE chr_work_order.order_id = ? AND CASE "
        "chr_work_order.status WHEN ? THEN ? WHEN ? THEN ? WHEN ? THEN ? WHEN ? THEN ? WHEN ? THEN ? WHEN ? THEN ? "
        "ELSE ? END < ?"
    )
    assert len(compiled.positiontup or []) == 3 + 2 * 6 + 2


def test_an_upsert_keeping_history_reads_3000_stored_rows_with_their_values_in_statements_sql_server_accepts(
    target: sa.Engine, recorder: StatementRecorder
) -> None:
    sink = SqlUpsertSink(target, workflows, ["tenant", "workflow_id"], "updated_at", history=True)
    sink.write([workflow(n) for n in range(3000)])
    recorder.forget()

    later = T0 + dt.timedelta(seconds=1)
    counts = sink.write(
        [workflow(n, later, name=f"renamed {n}") if n % 2 else workflow(n, name="edited") for n in range(3000)]
    )

    assert (counts.updated, len(counts.changes), len(counts.conflicts)) == (1500, 1500, 1500)
    change = counts.changes[0]
    assert change.old == {"name": "Invoice run 1", "updated_at": T0} and change.new == {
        "name": "renamed 1",
        "updated_at": later,
    }
    assert counts.conflicts[0].reason == "updated_at equal to the stored row's, content differs"
    lookups = [e.on_sql_server()[1] for e in recorder.executions if isinstance(e.statement, sa.Select)]
    assert lookups == [1500] * 6  # 500 rows of tenant, workflow_id, updated_at: their values come back, not in


def test_the_history_and_conflicts_of_4500_records_go_to_the_log_in_statements_sql_server_accepts(
    tmp_path: Path,
) -> None:
    log = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    log_metadata.create_all(log)
    recorder = StatementRecorder()
    sa.event.listen(log, "before_execute", recorder.before_execute)
    history = ChangeHistory(log, "zuora.Workflows/acme", "run-1")
    conflicts = [ConflictingRow(str(n), "older", {"name": "a"}, {"name": "b"}) for n in range(4500)]

    history.flag(conflicts)
    history.flag(conflicts)  # seen again: updated, not inserted twice
    history.record([ChangedRow(str(n), "updated", {"name": "a"}, {"name": "b"}) for n in range(4500)], applied=False)
    history.applied()
    lookups = [e.on_sql_server()[1] for e in recorder.executions if isinstance(e.statement, sa.Select)]

    with log.connect() as conn:
        seen = conn.execute(sa.select(sa.func.sum(conflict_table.c.Seen), sa.func.count())).one()
        unapplied = conn.execute(sa.select(sa.func.count()).where(history_table.c.AppliedOn.is_(None))).scalar_one()
    assert tuple(seen) == (9000, 4500) and unapplied == 0
    assert lookups == [2001, 2001, 501] * 2 and recorder.violations() == []
    log.dispose()
