"""SQL Server's rules, held without a SQL Server: every statement a sync runs, compiled for mssql.

A full sync runs on SQLite while a listener keeps each statement with its parameters; each is then
compiled with the mssql dialect and checked against the 2100-parameter and 1000-row limits.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.sources.sql_table import page_queries, row_count_query
from sync_pipeline.engine.state.retry_queue import (
    dead_among_query,
    queue_counts_query,
    queue_ids_query,
    queue_query,
    requeue_statement,
)
from sync_pipeline.engine.state.row_hashes import RowHashStore, row_hash, upsert_row_hashes
from sync_pipeline.engine.state.tracking import (
    MAX_IDS_PER_LOOKUP,
    Rejection,
    TrackingStore,
    rejected_again,
)
from sync_pipeline.engine.tables import (
    LongText,
    cursor_table,
    rejected_table,
    row_hash_table,
    scheduler_log_table,
    source_table,
    tracking_table,
)
from sync_pipeline.orchestration.sync_assets import entity_plan
from sync_pipeline.settings import Settings
from sync_pipeline.specs.model import FieldType
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_ENTITIES, TAMHR_SYNC

from .conftest import EntitySync, SettingsFactory, SyncDatabases, entity_id
from .fakes import RecordingApiClient, ScriptedAnswer

MAX_PARAMETERS = 2100
MAX_VALUES_ROWS = 1000
MSSQL = mssql.dialect(paramstyle="qmark")
VALUES_ROW_SEPARATOR = re.compile(r"\)\s*,\s*\(")


def values_rows(sql: str) -> int:
    """How many row tuples an INSERT's VALUES clause holds (0 for any other statement)."""
    if not sql.lstrip().upper().startswith("INSERT") or "VALUES" not in sql.upper():
        return 0
    return len(VALUES_ROW_SEPARATOR.findall(re.split("VALUES", sql, maxsplit=1, flags=re.I)[1])) + 1


@dataclass(frozen=True)
class Execution:
    """One `Connection.execute`: the statement and its parameter sets (several for an executemany)."""

    statement: sa.sql.ClauseElement
    parameter_sets: list[dict[str, Any]]

    def on_sql_server(self) -> tuple[str, int]:
        """The SQL SQL Server would be sent per execution, and how many parameters it binds."""
        first = self.parameter_sets[0] if self.parameter_sets else {}
        compiled: Any
        if isinstance(self.statement, sa.Insert):
            compiled = self.statement.compile(dialect=MSSQL, column_keys=list(first))
        elif isinstance(self.statement, sa.Update | sa.Delete):  # their values come as bindparams
            compiled = self.statement.compile(dialect=MSSQL, compile_kwargs={"render_postcompile": True})
        else:
            bound = self.statement.params(first) if first else self.statement
            compiled = bound.compile(dialect=MSSQL, compile_kwargs={"render_postcompile": True})
        return str(compiled), len(compiled.positiontup or [])


@dataclass
class StatementRecorder:
    """Keeps every statement executed on the engines it listens to, as SQLAlchemy and as the driver saw it."""

    executions: list[Execution] = field(default_factory=list)
    cursor_statements: list[tuple[str, int, int]] = field(default_factory=list)  # sql, params, rows

    def before_execute(self, conn: sa.Connection, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        """Keep a DML or SELECT statement with its parameter sets."""
        if isinstance(clause, sa.sql.ClauseElement) and not isinstance(clause, sa.schema.ExecutableDDLElement):
            parameter_sets = [dict(p) for p in multiparams] or ([dict(params)] if params else [])
            self.executions.append(Execution(clause, parameter_sets))

    def before_cursor_execute(
        self, conn: sa.Connection, cursor: Any, sql: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        """Keep what the driver is sent: the SQL, the parameters per execution, the VALUES rows."""
        per_execution = parameters[0] if executemany and parameters else parameters
        self.cursor_statements.append((sql, len(per_execution or ()), values_rows(sql)))

    def forget(self) -> None:
        """Drop what was recorded so far, e.g. a test's own setup."""
        self.executions.clear()
        self.cursor_statements.clear()

    def violations(self) -> list[str]:
        """Every recorded statement SQL Server would refuse for its size."""
        problems = []
        for execution in self.executions:
            sql, count = execution.on_sql_server()
            if count > MAX_PARAMETERS:
                problems.append(f"{count} parameters on mssql: {sql[:80]}")
            if values_rows(sql) > MAX_VALUES_ROWS:
                problems.append(f"{values_rows(sql)} VALUES rows on mssql: {sql[:80]}")
        for sql, count, rows in self.cursor_statements:
            if count > MAX_PARAMETERS or rows > MAX_VALUES_ROWS:
                problems.append(f"{count} parameters, {rows} VALUES rows sent: {sql[:80]}")
        return problems


@pytest.fixture
def recorder(databases: SyncDatabases) -> Iterator[StatementRecorder]:
    """A recorder listening to the default, ESS and Log engines for the rest of the test."""
    recorder = StatementRecorder()
    for engine in databases.engines.values():
        sa.event.listen(engine, "before_execute", recorder.before_execute)
        sa.event.listen(engine, "before_cursor_execute", recorder.before_cursor_execute)
    yield recorder
    for engine in databases.engines.values():
        sa.event.remove(engine, "before_execute", recorder.before_execute)
        sa.event.remove(engine, "before_cursor_execute", recorder.before_cursor_execute)


def test_a_full_sync_never_runs_a_statement_sql_server_would_refuse_for_its_size(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory, recorder: StatementRecorder
) -> None:
    settings = make_settings(batch_size=3000)
    databases.insert_rows("Users", 7000)
    databases.track("Users", [str(entity_id(ENTITIES_BY_NAME["Users"], n)) for n in range(0, 7000, 7)])
    for spec in TAMHR_ENTITIES[1:]:
        databases.insert_rows(spec.name, 5)
    api = RecordingApiClient(
        scripted_answers=[ScriptedAnswer(url=settings.endpoint_url("ActualOrg"), call_number=1, times=3)]
    )
    recorder.forget()

    reports = [run_sync(spec.name, settings=settings, api=api) for spec in TAMHR_ENTITIES]

    assert [report.sent for report in reports] == [6000, 0, 5, 5, 5]
    tracking_inserts = [
        len(e.parameter_sets)
        for e in recorder.executions
        if isinstance(e.statement, sa.Insert) and e.statement.table is tracking_table
    ]
    assert max(tracking_inserts) == 3000, "the sync must have tracked a full batch of 3000 in this test"
    assert recorder.violations() == []


def test_the_size_checks_catch_a_thousand_and_one_row_insert_and_a_2500_id_lookup(
    databases: SyncDatabases, recorder: StatementRecorder
) -> None:
    rows = [{"EntityType": "Users", "EntityId": f"id-{n}", "SyncTimestamp": sa.func.now()} for n in range(1001)]
    with databases.log.begin() as conn:
        conn.execute(sa.insert(tracking_table).values(rows))
        conn.execute(sa.select(tracking_table.c.Id).where(tracking_table.c.EntityId.in_([str(n) for n in range(2500)])))

    problems = recorder.violations()

    assert any("1001 VALUES rows on mssql" in problem for problem in problems)
    assert any("2500 parameters on mssql" in problem for problem in problems)


def test_a_tracking_lookup_of_4500_ids_goes_in_chunks_each_under_2100_parameters(
    databases: SyncDatabases, recorder: StatementRecorder, settings: Settings
) -> None:
    ids = [str(uuid.UUID(int=n)) for n in range(4500)]
    databases.track("Users", ids[::3])
    store = TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns()))
    recorder.forget()

    found = store.tracked_among("Users", ids)

    assert found == set(ids[::3])
    lookups = [execution.on_sql_server()[1] for execution in recorder.executions]
    assert lookups == [MAX_IDS_PER_LOOKUP + 1, MAX_IDS_PER_LOOKUP + 1, 500 + 1]
    assert max(lookups) < MAX_PARAMETERS


def test_the_tracking_lookup_of_2000_ids_compiles_to_2001_parameters_on_mssql(settings: Settings) -> None:
    store = TrackingStore(sa.create_engine("sqlite://"), SchedulerLogWriter(settings.scheduler_log.columns()))
    lookup = store._lookup.params(entity_type="Users", entity_ids=[f"id-{n}" for n in range(MAX_IDS_PER_LOOKUP)])

    compiled = lookup.compile(dialect=MSSQL, compile_kwargs={"render_postcompile": True})

    assert len(compiled.positiontup or []) == 2001 < MAX_PARAMETERS


@pytest.mark.parametrize(
    "column",
    [
        tracking_table.c.SyncTimestamp,
        scheduler_log_table.c.CreatedOn,
        scheduler_log_table.c.ModifiedOn,
        row_hash_table.c.SyncTimestamp,
        cursor_table.c.SyncTimestamp,
    ],
    ids=str,
)
def test_log_timestamps_are_datetime2_on_sql_server(column: sa.Column[Any]) -> None:
    assert column.type.compile(dialect=MSSQL) == "DATETIME2"


def test_every_source_timestamp_and_guid_has_its_sql_server_type(settings: Settings) -> None:
    expected = {FieldType.DATETIME: "DATETIME2", FieldType.GUID: "UNIQUEIDENTIFIER"}
    for spec in TAMHR_ENTITIES:
        table = source_table(spec, settings.entities[spec.name])
        for entity_field in spec.fields:
            if entity_field.type in expected:
                compiled = table.c[entity_field.name].type.compile(dialect=MSSQL)
                assert compiled == expected[entity_field.type], (spec.name, entity_field.name)


def test_unbounded_text_is_nvarchar_max_not_ntext_on_sql_server() -> None:
    ddl = str(sa.schema.CreateTable(scheduler_log_table).compile(dialect=MSSQL))

    assert LongText.compile(dialect=MSSQL) == "NVARCHAR(max)"
    assert "NTEXT" not in ddl and "[ExceptionMessage] NVARCHAR(max)" in ddl


def test_source_pages_are_read_with_top_and_order_by_never_offset(settings: Settings) -> None:
    plan = entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME["Users"], settings)
    columns = [f.name for f in plan.spec.fields]

    queries = page_queries(plan.table, columns, "Id", 3000)

    tops = {queries.first: 3000, queries.after_key: 3000, queries.keys_first: 3000, queries.keys_after: 3000}
    tops |= {queries.from_key: 3001, queries.keys_from: 3001}  # the last key again, and a full page after it
    for query, top in tops.items():
        bound = query.params(last_key=uuid.UUID(int=7))
        sql = str(bound.compile(dialect=MSSQL, compile_kwargs={"render_postcompile": True}))
        assert re.search(rf"SELECT TOP {top}\b", sql)
        assert sql.rstrip().endswith("ORDER BY [TB_M_USER].[Id]")
        assert "OFFSET" not in sql.upper() and "FETCH" not in sql.upper()
    assert "WHERE [TB_M_USER].[Id] IS NOT NULL ORDER BY" in str(queries.first.compile(dialect=MSSQL))
    assert "WHERE [TB_M_USER].[Id] >= ? ORDER BY" in str(queries.from_key.compile(dialect=MSSQL))
    assert "WHERE [TB_M_USER].[Id] > ? ORDER BY" in str(queries.after_key.compile(dialect=MSSQL))
    assert "WHERE [TB_M_USER].[Id] = ?" in str(queries.one_key.compile(dialect=MSSQL))
    assert str(queries.null_keys.compile(dialect=MSSQL)).endswith("WHERE [TB_M_USER].[Id] IS NULL")


def test_the_progress_count_is_one_count_of_the_whole_table_without_parameters_on_sql_server(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(Users={"table": "dbo.TB_M_USER"})
    table = entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME["Users"], settings).table

    compiled = row_count_query(table).compile(dialect=MSSQL)

    assert str(compiled) == "SELECT count(*) AS count_1 \nFROM dbo.[TB_M_USER]"
    assert not compiled.positiontup


def test_a_guid_key_is_read_as_text_but_paged_and_ordered_as_a_uniqueidentifier(settings: Settings) -> None:
    plan = entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME["Users"], settings)

    after = page_queries(plan.table, ["Id", "Name"], "Id", 3000, mssql.UNIQUEIDENTIFIER()).from_key

    sql = str(after.compile(dialect=MSSQL))
    assert sql.startswith("SELECT TOP __[POSTCOMPILE_param_1] CAST([TB_M_USER].[Id] AS VARCHAR(36)) AS [Id], ")
    assert "WHERE [TB_M_USER].[Id] >= ? ORDER BY [TB_M_USER].[Id]" in sql
    assert isinstance(after.compile(dialect=MSSQL).binds["last_key"].type, mssql.UNIQUEIDENTIFIER)


def test_a_guid_key_stored_as_nvarchar_is_read_and_compared_as_nvarchar_without_a_cast(settings: Settings) -> None:
    plan = entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME["Users"], settings)

    queries = page_queries(plan.table, ["Id", "Name"], "Id", 3000, mssql.NVARCHAR(36))

    for query in (queries.from_key, queries.after_key, queries.one_key):
        compiled = query.compile(dialect=MSSQL)
        assert str(compiled).startswith("SELECT TOP __[POSTCOMPILE_param_1] [TB_M_USER].[Id] AS [Id], ") or (
            query is queries.one_key and str(compiled).startswith("SELECT [TB_M_USER].[Id] AS [Id], ")
        )
        assert "CAST" not in str(compiled)
        bind = compiled.binds["key_value" if query is queries.one_key else "last_key"]
        assert isinstance(bind.type, mssql.NVARCHAR) and bind.type.length == 36


def test_a_boolean_column_is_read_as_the_driver_returns_it(settings: Settings) -> None:
    plan = entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME["EventsCalendar"], settings)
    columns = [f.name for f in plan.spec.fields]

    first = page_queries(plan.table, columns, "Id", 3000).first

    assert isinstance(first.selected_columns["RowStatus"].type, sa.types.NullType)
    assert "[TB_M_EVENTS_CALENDAR].[RowStatus] AS [RowStatus]" in str(first.compile(dialect=MSSQL))


def test_where_sqlalchemy_pages_an_executemany_into_values_lists_for_mssql_it_stays_under_both_limits() -> None:
    per_statement_rows = min(MSSQL.insertmanyvalues_page_size, MSSQL.insertmanyvalues_max_parameters // 3)

    assert per_statement_rows <= MAX_VALUES_ROWS
    assert per_statement_rows * len(["EntityType", "EntityId", "SyncTimestamp"]) < MAX_PARAMETERS


def test_rejecting_4500_records_twice_keeps_one_row_each_and_every_statement_fits_sql_server(
    databases: SyncDatabases, recorder: StatementRecorder, settings: Settings
) -> None:
    store = TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns()))
    ids = [str(uuid.UUID(int=n)) for n in range(4500)]
    store.record_rejected("Users", [Rejection(eid, 422, "first") for eid in ids[:3000]])
    recorder.forget()

    store.record_rejected("Users", [Rejection(eid, 400, "again") for eid in ids])

    with databases.log.connect() as conn:
        rows = conn.execute(sa.select(rejected_table.c.EntityId, rejected_table.c.RejectionCount)).all()
    assert sorted(rows) == sorted((eid, 2 if n < 3000 else 1) for n, eid in enumerate(ids))
    kinds = {type(execution.statement).__name__ for execution in recorder.executions}
    assert kinds == {"Select", "Update", "Insert"}
    assert recorder.violations() == []


def test_classifying_4500_row_hashes_looks_them_up_in_chunks_each_under_2100_parameters(
    databases: SyncDatabases, recorder: StatementRecorder
) -> None:
    store = RowHashStore(databases.log)
    ids = [str(uuid.UUID(int=n)) for n in range(4500)]
    store.record_sent("praxedo/WorkOrder", [(eid, row_hash({"n": n}), None) for n, eid in enumerate(ids[::3])])
    recorder.forget()

    changes = store.classify("praxedo/WorkOrder", [(eid, row_hash({"n": n // 3})) for n, eid in enumerate(ids)])

    assert len(changes.unchanged) == 1500 and len(changes.new) == 3000
    lookups = [execution.on_sql_server()[1] for execution in recorder.executions]
    assert lookups == [MAX_IDS_PER_LOOKUP + 1, MAX_IDS_PER_LOOKUP + 1, 500 + 1]
    assert recorder.violations() == []


def test_sql_server_upserts_a_batch_of_row_hashes_as_one_merge_of_five_typed_parameters_per_row() -> None:
    executed: list[tuple[Any, tuple[Any, ...]]] = []
    sql_server = sa.create_mock_engine(
        "mssql+pyodbc://", lambda statement, *params: executed.append((statement, params))
    )
    rows = [(str(uuid.UUID(int=n)), row_hash({"n": n}), f"WO-{n}") for n in range(3000)]

    upsert_row_hashes(sql_server, "praxedo/WorkOrder", rows, dt.datetime(2024, 6, 1, 3, 0))  # type: ignore[arg-type]

    [(merge, (parameter_sets,))] = executed
    compiled = merge.compile(dialect=MSSQL)
    sql = str(compiled)
    assert sql.startswith("MERGE INTO TB_R_SYNC_ROW_HASH WITH (HOLDLOCK) AS target USING (VALUES (?, ?, ?, ?, ?)) ")
    assert sql.count("(?, ?, ?, ?, ?)") == 1 and sql.endswith(";")
    assert len(compiled.positiontup or []) == 5 < MAX_PARAMETERS
    assert len(parameter_sets) == 3000 and {len(parameters) for parameters in parameter_sets} == {5}
    bound_types = {name: bind.type.compile(dialect=MSSQL) for name, bind in compiled.binds.items()}
    assert bound_types == {
        "EntityType": "NVARCHAR(100)",
        "EntityId": "NVARCHAR(255)",
        "RowHash": "CHAR(32)",
        "ExternalId": "NVARCHAR(255)",
        "SyncTimestamp": "DATETIME2",
    }


def test_the_retry_queue_listings_compile_for_sql_server_with_top_and_the_dead_letter_mark() -> None:
    queued = str(queue_query(["field_service.Contacts"], dead=False, limit=200).compile(dialect=MSSQL))
    dead = str(queue_query(["field_service.Contacts"], dead=True, limit=200).compile(dialect=MSSQL))
    counts = str(queue_counts_query("field_service.Contacts").compile(dialect=MSSQL))
    dead_ids = str(queue_ids_query("field_service.Contacts", dead=True).compile(dialect=MSSQL))

    assert queued.startswith("SELECT TOP __[POSTCOMPILE_param_1] ") and dead.startswith("SELECT TOP ")
    assert "[TB_R_SYNC_REJECTED].[DeadLetteredOn] IS NULL" in queued
    assert "[TB_R_SYNC_REJECTED].[DeadLetteredOn] IS NOT NULL" in dead
    assert "ORDER BY [TB_R_SYNC_REJECTED].[LastRejectedOn] DESC" in dead
    assert "count(*) AS count_1, count([TB_R_SYNC_REJECTED].[DeadLetteredOn])" in counts
    assert "[TB_R_SYNC_REJECTED].[DeadLetteredOn] IS NOT NULL" in dead_ids


def test_a_resend_of_2000_dead_records_fits_sql_server_in_one_update_per_chunk() -> None:
    ids = [f"CON-{n:05}-1" for n in range(MAX_IDS_PER_LOOKUP)]

    update = requeue_statement("field_service.Contacts", ids).compile(
        dialect=MSSQL, compile_kwargs={"render_postcompile": True}
    )
    lookup = dead_among_query("field_service.Contacts", ids).compile(
        dialect=MSSQL, compile_kwargs={"render_postcompile": True}
    )

    assert str(update).startswith("UPDATE [TB_R_SYNC_REJECTED] SET [RejectionCount]=?, [DeadLetteredOn]=? WHERE")
    assert len(update.positiontup or []) == 2003 < MAX_PARAMETERS
    assert len(lookup.positiontup or []) == 2001 < MAX_PARAMETERS


def test_a_record_refused_again_keeps_the_first_time_it_died_as_a_datetime2_on_sql_server() -> None:
    compiled = rejected_again.compile(dialect=MSSQL)

    assert "[DeadLetteredOn]=coalesce([TB_R_SYNC_REJECTED].[DeadLetteredOn], ?)" in str(compiled)
    assert compiled.binds["b_DeadLetteredOn"].type.compile(dialect=MSSQL) == "DATETIME2"
