"""The SQL sinks on the real PostgreSQL and MariaDB, each with its own upsert statement, under SQL Server's
size limits (this folder's conftest fails any statement SQL Server would refuse)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg.adapt import PyFormat

from sync_pipeline.engine.sinks.sql_target import RunTransaction
from sync_pipeline.engine.sinks.sql_upsert import SqlUpsertSink, UpsertCounts
from sync_pipeline.engine.tables import DateTime2
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.real_db.conftest import SERVERS, fresh_databases
from sync_pipeline_tests.sql_sink_scenarios import (
    SCENARIOS,
    T0,
    TENANT,
    stored_workflows,
    target_metadata,
    workflow,
    workflow_sink,
    workflows,
)

pytestmark = pytest.mark.real_db


@pytest.fixture(params=sorted(SERVERS))
def target(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """A fresh database on the server under test holding empty target tables; dropped afterwards."""
    with fresh_databases(request.param, ["target_db"]) as urls:
        engine = create_sync_engine(urls["target_db"])
        target_metadata.create_all(engine)
        yield engine
        engine.dispose()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_the_sql_sinks_behave_on_the_real_server_as_on_sqlite(
    target: sa.Engine, scenario: Callable[[sa.Engine], None]
) -> None:
    scenario(target)


@pytest.fixture
def postgresql_target() -> Iterator[tuple[sa.Engine, list[tuple[str, int]]]]:
    """A fresh PostgreSQL database with empty target tables, and what the driver is sent: each statement's
    SQL and its number of parameters."""
    sent: list[tuple[str, int]] = []

    def keep(conn: sa.Connection, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement.lstrip().split(None, 1)[0].upper(), len(parameters)))

    with fresh_databases("postgresql", ["target_db"]) as urls:
        engine = create_sync_engine(urls["target_db"])
        target_metadata.create_all(engine)
        sa.event.listen(engine, "before_cursor_execute", keep)
        yield engine, sent
        engine.dispose()


def test_postgresql_upserts_a_batch_of_3000_in_one_statement_of_five_arrays_without_reading_it_first(
    postgresql_target: tuple[sa.Engine, list[tuple[str, int]]],
) -> None:
    engine, sent = postgresql_target
    sink = workflow_sink(engine)
    assert sink.write([workflow(n) for n in range(0, 3000, 2)]) == UpsertCounts(inserted=1500)
    sent.clear()

    later = T0 + dt.timedelta(minutes=1)
    counts = sink.write([workflow(n, later if n % 4 == 0 else T0, version=2) for n in range(3000)])

    assert counts == UpsertCounts(inserted=1500, updated=750, skipped=750)
    # WITH written AS (INSERT … FROM json_to_recordset(:rows) … RETURNING …) SELECT count(…): counted by the database
    assert sent == [("WITH", 1)], "the batch as one JSON text"
    stored = stored_workflows(engine)
    assert sum(row["version"] == 2 for row in stored.values()) == 750 + 1500


def test_postgresql_counts_a_key_again_in_a_later_batch_of_one_run_transaction_as_an_update(
    postgresql_target: tuple[sa.Engine, list[tuple[str, int]]],
) -> None:
    engine, _ = postgresql_target
    run = RunTransaction(engine)
    sink = workflow_sink(run)
    assert sink.write([workflow(n) for n in range(10)]) == UpsertCounts(inserted=10)

    later = T0 + dt.timedelta(seconds=1)
    counts = sink.write([workflow(n, later if n < 8 else T0, name=f"again {n}") for n in range(5, 15)])
    run.commit()

    assert counts == UpsertCounts(inserted=5, updated=3, skipped=2)
    names = {key[1]: row["name"] for key, row in stored_workflows(engine).items()}
    assert [names[n] for n in (4, 5, 7, 8, 14)] == ["Invoice run 4", "again 5", "again 7", "Invoice run 8", "again 14"]


def test_postgresql_with_history_reads_the_stored_rows_once_and_writes_the_batch_in_one_statement(
    postgresql_target: tuple[sa.Engine, list[tuple[str, int]]],
) -> None:
    engine, sent = postgresql_target
    sink = SqlUpsertSink(engine, workflows, ["tenant", "workflow_id"], "updated_at", history=True)
    sink.write([workflow(n) for n in range(3000)])
    sent.clear()

    counts = sink.write([workflow(n, T0 + dt.timedelta(seconds=1), name=f"renamed {n}") for n in range(3000)])

    assert (counts.updated, len(counts.changes)) == (3000, 3000)
    assert counts.changes[0].old == {"name": "Invoice run 0", "updated_at": T0}
    assert sent == [("SELECT", 3), ("WITH", 1)]  # the lookup, then the counted upsert of the rows as JSON


def test_postgresql_refuses_a_number_too_long_for_its_text_column_rather_than_cutting_it(
    postgresql_target: tuple[sa.Engine, list[tuple[str, int]]],
) -> None:
    engine, _ = postgresql_target

    counts = workflow_sink(engine).write([workflow(1, name=10**100), workflow(2)])

    assert counts.inserted == 1
    assert [(r.key, "too long" in r.reason) for r in counts.refused] == [((TENANT, 1), True)]
    assert sorted(stored_workflows(engine)) == [(TENANT, 2)]


def test_postgresql_writes_two_keys_it_takes_for_one_each_in_turn_last_write_wins() -> None:
    padded = sa.Table(
        "padded_code",
        sa.MetaData(),
        sa.Column("code", sa.CHAR(4), primary_key=True),
        sa.Column("updated_at", DateTime2),
        sa.Column("label", sa.Unicode(20), nullable=False),
    )
    with fresh_databases("postgresql", ["target_db"]) as urls:
        engine = create_sync_engine(urls["target_db"])
        padded.metadata.create_all(engine)
        sink = SqlUpsertSink(engine, padded, ["code"], "updated_at")
        try:
            counts = sink.write(
                [
                    {"code": "AB", "updated_at": T0, "label": "first"},
                    {"code": "AB  ", "updated_at": T0 + dt.timedelta(seconds=1), "label": "newer, padded"},
                ]
            )
            with engine.connect() as conn:
                stored = conn.execute(sa.select(padded.c.label)).scalars().all()
        finally:
            engine.dispose()

    assert counts.refused == [] and counts.inserted + counts.updated == 2
    assert stored == ["newer, padded"]


def test_postgresql_gets_a_batch_json_cannot_carry_exactly_as_arrays_and_stores_what_they_bring(
    postgresql_target: tuple[sa.Engine, list[tuple[str, int]]],
) -> None:
    engine, sent = postgresql_target
    aware = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # for a naive column

    counts = workflow_sink(engine).write([workflow(1, aware), workflow(2, aware + dt.timedelta(seconds=1))])

    assert counts == UpsertCounts(inserted=2)
    assert sent == [("WITH", 5)], "tenants, workflow ids, timestamps, names, versions: one array each"
    stored = stored_workflows(engine)
    assert [stored[(TENANT, n)]["updated_at"] for n in (1, 2)] == [
        as_the_session_reads(engine, aware + dt.timedelta(seconds=n)) for n in (0, 1)
    ]


def as_the_session_reads(engine: sa.Engine, aware: dt.datetime) -> dt.datetime:
    """An aware timestamp as a naive column stores it from a timestamptz array: in the session's time zone."""
    with engine.connect() as conn:
        naive: dt.datetime = conn.scalar(
            sa.select(sa.cast(sa.literal(aware, sa.DateTime(timezone=True)), sa.DateTime()))
        )
    return naive


@pytest.mark.parametrize("sent_as", ["json", "arrays"])
def test_postgresql_keeps_every_value_of_a_batch_sent_as_json_or_as_binary_arrays(
    postgresql_target: tuple[sa.Engine, list[tuple[str, int]]], sent_as: str
) -> None:
    engine, sent = postgresql_target
    formats: list[str] = []

    def dumper_format(conn: sa.Connection, cursor: Any, *_: Any) -> None:
        formats.append(cursor.adapters.get_dumper(list, PyFormat.AUTO).format.name)

    names = ['say "hi"', "back\\slash", "NULL", "", "{braces, comma}", "Ünïcode ✓", "tab\tnew\nline", "\\u00e9 as text"]
    stamps = [T0 + dt.timedelta(microseconds=n) for n in range(len(names))]
    if sent_as == "arrays":  # aware timestamps for a naive column: JSON would not bring them as the arrays do
        stamps = [stamp.replace(tzinfo=dt.UTC) for stamp in stamps]
    records = [
        workflow(n, stamp, name=name, version=None) for n, (name, stamp) in enumerate(zip(names, stamps, strict=True))
    ]
    sa.event.listen(engine, "before_cursor_execute", dumper_format)
    counts = workflow_sink(engine).write(records)

    assert counts.inserted == len(records) and set(formats) == {"BINARY"}
    assert sent == [("WITH", 5 if sent_as == "arrays" else 1)]
    expected = [as_the_session_reads(engine, stamp) if sent_as == "arrays" else stamp for stamp in stamps]
    stored = stored_workflows(engine)
    assert [stored[(TENANT, n)]["name"] for n in range(len(names))] == names
    assert [stored[(TENANT, n)]["updated_at"] for n in range(len(names))] == expected
    assert {row["version"] for row in stored.values()} == {None}
