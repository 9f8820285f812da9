"""A SQL-sink entity's batches on SQLite: values turned back into their columns' types, refusals kept by EntityId."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.batching import Batch
from sync_pipeline.engine.sinks.http_batch import Refusals
from sync_pipeline.engine.sinks.sql_batch import (
    SqlBatchSender,
    TableCounts,
    column_value,
    reflect_table,
    table_sink,
)
from sync_pipeline.engine.sinks.sql_deletions import MissingRows, SeenKeys
from sync_pipeline.engine.sinks.sql_rows import SqlSinkUnavailable
from sync_pipeline.engine.state.tracking import Rejection, TrackingStore
from sync_pipeline.engine.tables import rejected_table, scheduler_log_table
from sync_pipeline.specs.model import SqlSinkSpec

from .test_mssql_rules import StatementRecorder

T0 = dt.datetime(2026, 11, 1, 8, 0)
ENTITY = "pull.Orders"


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    """A target database with an orders table, and a Log database."""
    target = sa.create_engine(f"sqlite:///{tmp_path / 'target.db'}")
    orders = sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("order_id", sa.String(36), primary_key=True),
        sa.Column("label", sa.String(10), nullable=False),
        sa.Column("ref", sa.Uuid, nullable=True),
        sa.Column("due", sa.Date, nullable=True),
        sa.Column("changed_at", sa.DateTime, nullable=True),
        sa.Column("gone_at", sa.DateTime, nullable=True),
    )
    orders.metadata.create_all(target)
    log = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    create_log_tables(log)
    yield target, log
    target.dispose()
    log.dispose()


def sender(target: sa.Engine, log: sa.Engine, spec: SqlSinkSpec) -> SqlBatchSender:
    tracking = TrackingStore(
        log,
        SchedulerLogWriter(
            {
                "ApplicationName": "t",
                "LogID": "t",
                "LogCategory": "t",
                "ApplicationModule": "t",
                "IPHostName": "t",
                "CreatedBy": "t",
            }
        ),
    )
    table = reflect_table(target, "orders")
    counts, counting = TableCounts(), threading.Lock()
    refusals = Refusals(tracking, ENTITY, counts, counting, logging.getLogger("test"))
    sink = table_sink(target, table, spec, ("order_id", "label", "ref", "due", "changed_at"))
    return SqlBatchSender(ENTITY, sink, None, tracking, refusals, counts, counting)


def order(n: int, changed_at: str, label: str | None = None) -> dict[str, object]:
    return {"order_id": f"o{n}", "label": label or f"L{n}", "ref": None, "due": None, "changed_at": changed_at}


def test_iso_text_becomes_the_columns_own_types_and_an_offset_is_turned_into_utc() -> None:
    columns = sa.Table(
        "t", sa.MetaData(), sa.Column("at", sa.DateTime), sa.Column("on", sa.Date), sa.Column("ref", sa.Uuid)
    ).c
    assert column_value(columns["at"], "2026-11-01T10:00:00+02:00") == dt.datetime(2026, 11, 1, 8, 0)
    assert column_value(columns["at"], "2026-11-01T08:00:00") == dt.datetime(2026, 11, 1, 8, 0)
    utc = "2026-11-01T08:00:00.250000+00:00"  # how the record builder writes a UTC timestamp
    assert column_value(columns["at"], utc) == dt.datetime(2026, 11, 1, 8, 0, 0, 250_000)
    assert column_value(columns["on"], "2026-11-01") == dt.date(2026, 11, 1)
    ref = uuid.uuid4()
    assert column_value(columns["ref"], str(ref)) == ref
    assert column_value(columns["at"], None) is None
    number = sa.Table("n", sa.MetaData(), sa.Column("id", sa.Integer)).c["id"]
    assert column_value(number, "1042") == 1042  # an integer key comes as its EntityId text
    assert column_value(number, 7) == 7
    for text in ("yesterday", "yesterday+00:00", "the day before yesterday+00:00"):
        with pytest.raises(ValueError):
            column_value(columns["at"], text)


def test_an_upsert_batch_writes_the_newer_records_and_quarantines_the_one_the_table_refuses(
    engines: tuple[sa.Engine, sa.Engine],
) -> None:
    target, log = engines
    upsert = sender(target, log, SqlSinkSpec("app_db", "upsert", ("order_id",), "changed_at"))
    first = [order(n, (T0 + dt.timedelta(minutes=n)).isoformat()) for n in range(4)]
    upsert.send(Batch([f"o{n}" for n in range(4)], first))
    assert (upsert.counts.inserted, upsert.counts.sent) == (4, 4)

    again = [
        order(0, T0.isoformat(), "same"),  # as old as the stored row: left alone
        order(1, (T0 + dt.timedelta(days=1)).isoformat(), "newer"),
        order(2, (T0 + dt.timedelta(days=1)).isoformat(), "far too long for ten"),
        order(3, "not a time"),
    ]
    upsert.send(Batch(["o0", "o1", "o2", "o3"], again, [Rejection("o9", None, "not sent: key is NULL")], 1))
    assert (upsert.counts.updated, upsert.counts.unchanged, upsert.counts.rejected) == (1, 1, 3)
    with target.connect() as conn:
        labels = dict(conn.execute(sa.text("SELECT order_id, label FROM orders")).all())
    assert labels == {"o0": "L0", "o1": "newer", "o2": "L2", "o3": "L3"}
    with log.connect() as conn:
        reasons = dict(conn.execute(sa.select(rejected_table.c.EntityId, rejected_table.c.Reason)).all())
        writes = conn.execute(sa.select(scheduler_log_table.c.Activity, scheduler_log_table.c.Status)).all()
    assert set(reasons) == {"o2", "o3", "o9"}
    assert "column label" in reasons["o2"] and "10" in reasons["o2"]
    assert reasons["o3"] == "not written: column changed_at: Invalid isoformat string: 'not a time'"
    assert writes == [(f"Sync Batch: {ENTITY}", "Success")] * 2  # one row per batch written


def test_an_update_batch_quarantines_records_that_match_no_row_and_never_inserts(
    engines: tuple[sa.Engine, sa.Engine],
) -> None:
    target, log = engines
    with target.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders (order_id, label) VALUES ('o1', 'old')"))
    update = sender(target, log, SqlSinkSpec("crm_db", "update", ("order_id",), columns=("label",)))
    update.send(Batch(["o1", "o2"], [{"order_id": "o1", "label": "new"}, {"order_id": "o2", "label": "x"}]))
    assert (update.counts.updated, update.counts.rejected) == (1, 1)
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT order_id, label FROM orders")).all() == [("o1", "new")]
    with log.connect() as conn:
        (reason,) = conn.execute(sa.select(rejected_table.c.Reason).where(rejected_table.c.EntityId == "o2")).scalars()
    assert reason == "not written: no row of orders has key ('o2',)"


def test_a_target_table_that_is_not_there_is_named() -> None:
    engine = sa.create_engine("sqlite://")
    with pytest.raises(SqlSinkUnavailable, match=r"^table missing_orders does not exist in the target database$"):
        reflect_table(engine, "missing_orders")
    with pytest.raises(SqlSinkUnavailable, match=r"^cannot read table app\.orders: OperationalError"):
        reflect_table(engine, "app.orders")


def test_a_complete_listing_marks_what_it_left_out_deleted_and_clears_what_came_back(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    table = sa.Table(
        "workflows",
        sa.MetaData(),
        sa.Column("customer", sa.String(20), primary_key=True),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("deleted_at", sa.DateTime, nullable=True),
    )
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(table), [{"customer": c, "id": n, "deleted_at": None} for c in ("a", "b") for n in (1, 2, 3)]
        )
        conn.execute(sa.update(table).where(table.c.customer == "a", table.c.id == 3).values(deleted_at=T0))
    missing = MissingRows(table, ["customer", "id"], "deleted_at", {"customer": "a"})

    seen = SeenKeys()
    seen.add([("a", 2), ("a", 3)])

    counts = missing.mark(engine, seen, T0 + dt.timedelta(days=1))

    assert (counts.deleted, counts.revived) == (1, 1)
    with engine.connect() as conn:
        marks = {(c, n): d for c, n, d in conn.execute(sa.select(table))}
    assert marks[("a", 1)] == T0 + dt.timedelta(days=1)  # no longer listed
    assert marks[("a", 2)] is None and marks[("a", 3)] is None  # listed; 3 came back
    assert all(marks[("b", n)] is None for n in (1, 2, 3))  # another customer's rows: not this listing's
    with pytest.raises(ValueError, match="deleted_column: 'id' is not a nullable non-key column of workflows"):
        MissingRows(table, ["customer", "id"], "id", {})
    engine.dispose()


def workflows_with(engine: sa.Engine, key_type: sa.types.TypeEngine[Any], stored: int, marked: set[int]) -> sa.Table:
    """A customer's workflows table keyed by (customer, id) of `key_type`, holding ids 1..`stored` of customer
    `a`, those in `marked` marked deleted."""
    table = sa.Table(
        "workflows",
        sa.MetaData(),
        sa.Column("customer", sa.String(20), primary_key=True),
        sa.Column("id", key_type, primary_key=True, autoincrement=False),
        sa.Column("deleted_at", sa.DateTime, nullable=True),
    )
    table.metadata.create_all(engine)
    rows = [
        {"customer": "a", "id": key_type.python_type(n), "deleted_at": T0 if n in marked else None}
        for n in range(1, stored + 1)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(table), rows)
    return table


def key_reads(engine: sa.Engine) -> list[str]:
    """The statements on `engine` from now on that read the workflows' keys (not a count of them)."""
    reads: list[str] = []

    def note(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if statement.startswith("SELECT workflows.customer"):
            reads.append(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    return reads


@pytest.mark.parametrize(
    ("marked", "reads"),
    [(set(), []), ({2}, ["WHERE workflows.customer = ? AND workflows.deleted_at IS NOT NULL"])],
    ids=["none-marked", "one-marked"],
)
def test_a_listing_that_left_nothing_out_is_told_by_a_count_and_reads_only_the_rows_marked_deleted(
    tmp_path: Path, marked: set[int], reads: list[str]
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    table = workflows_with(engine, sa.Integer(), 4, marked)
    seen = SeenKeys()
    seen.add([("a", 1), ("a", 2)])
    seen.add([("a", 3), ("a", 4), ("a", 1)])  # a key seen twice counts once
    read = key_reads(engine)

    counts = MissingRows(table, ["customer", "id"], "deleted_at", {"customer": "a"}).mark(engine, seen, T0)

    assert (counts.deleted, counts.revived) == (0, len(marked))
    assert [statement.split("\n")[-1].strip() for statement in read] == reads
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(table.c.deleted_at.is_not(None))).scalar_one() == 0
    engine.dispose()


def test_marking_compiles_for_sql_server_within_its_limits_counted_or_compared_key_by_key(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    table = workflows_with(engine, sa.Integer(), 2500, {7})
    recorder = StatementRecorder()
    sa.event.listen(engine, "before_execute", recorder.before_execute)
    sa.event.listen(engine, "before_cursor_execute", recorder.before_cursor_execute)
    missing = MissingRows(table, ["customer", "id"], "deleted_at", {"customer": "a"})
    every, some = SeenKeys(), SeenKeys()
    every.add([("a", n) for n in range(1, 2501)])
    some.add([("a", n) for n in range(1, 2501, 2)])

    assert missing.mark(engine, every, T0).revived == 1  # counted: only the marked row read
    assert missing.mark(engine, some, T0).deleted == 1250  # compared: every key, 1,250 marked

    assert len(recorder.executions) == 6 and recorder.violations() == []
    engine.dispose()


def test_text_keys_are_compared_one_by_one_since_a_collation_may_make_two_seen_keys_one_row(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    table = workflows_with(engine, sa.String(20), 3, set())
    seen = SeenKeys()
    seen.add([("a", "1"), ("a", "2"), ("a", "x")])  # as many keys as stored rows, one of them not stored
    read = key_reads(engine)

    counts = MissingRows(table, ["customer", "id"], "deleted_at", {"customer": "a"}).mark(engine, seen, T0)

    assert counts.gone == [("a", "3")] and len(read) == 1


def test_a_listing_with_a_refused_record_marks_nothing_deleted_since_its_key_is_unknown(
    engines: tuple[sa.Engine, sa.Engine],
) -> None:
    target, log = engines
    upsert = sender(target, log, SqlSinkSpec("app_db", "upsert", ("order_id",), "changed_at"))
    upsert.missing = MissingRows(reflect_table(target, "orders"), ["order_id"], "gone_at", {})
    upsert.send(Batch(["o1", "o2"], [order(1, T0.isoformat()), order(2, T0.isoformat())]))
    complete = upsert.mark_missing(T0)
    assert complete is not None and (complete.deleted, complete.revived) == (0, 0)

    upsert.send(Batch(["o1"], [order(1, T0.isoformat())], [Rejection("o2", None, "not sent: bad")], 1))
    assert upsert.mark_missing(T0 + dt.timedelta(days=1)) is None
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM orders WHERE gone_at IS NOT NULL")).scalar_one() == 0
