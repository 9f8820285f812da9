"""The SQL sinks' scenarios, run on SQLite by the unit tests and on the real PostgreSQL and MariaDB.

Two target tables, as the two pulls need them: Zuora's workflows in the application's own table
(composite key tenant + workflow id, last write wins by `updated_at`), and CHR's work orders whose
status Praxedo reports back (an update of two chosen columns by order id).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.sinks.sql_update import SqlUpdateSink
from sync_pipeline.engine.sinks.sql_upsert import SqlUpsertSink, UpsertCounts
from sync_pipeline.engine.tables import DateTime2
from sync_pipeline.specs.model import ForwardOnly

target_metadata = sa.MetaData()
workflows = sa.Table(
    "zuora_workflow",
    target_metadata,
    sa.Column("tenant", sa.Unicode(20), primary_key=True),
    sa.Column("workflow_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("updated_at", DateTime2, nullable=True),  # before the columns it orders: MariaDB must assign it last
    sa.Column("name", sa.Unicode(100), nullable=False),
    sa.Column("version", sa.Integer),
)
work_orders = sa.Table(
    "chr_work_order",
    target_metadata,
    sa.Column("order_id", sa.Unicode(36), primary_key=True),
    sa.Column("title", sa.Unicode(100), nullable=False),
    sa.Column("status", sa.Unicode(20), nullable=False),
    sa.Column("completed_on", DateTime2, nullable=True),
)
workflows.append_constraint(sa.CheckConstraint(workflows.c.version >= 0, name="ck_zuora_workflow_version"))
work_orders.append_constraint(
    sa.CheckConstraint(
        work_orders.c.status.in_(["NEW", "SCHEDULED", "ON HOLD", "COMPLETED", "VALIDATED", "CANCELLED", "CLOSED"]),
        name="ck_chr_work_order_status",
    )
)

T0 = dt.datetime(2026, 11, 30, 8, 0, 0, 250_000)
TENANT = "acme"


def workflow(number: int, updated_at: dt.datetime | None = T0, tenant: str = TENANT, **edits: Any) -> dict[str, Any]:
    """Workflow `number` of `tenant` as Zuora's mapping makes it, with `edits` applied."""
    return {
        "tenant": tenant,
        "workflow_id": number,
        "name": f"Invoice run {number}",
        "version": 1,
        "updated_at": updated_at,
        **edits,
    }


def workflow_sink(engine: sa.Engine) -> SqlUpsertSink:
    """The Zuora pull's sink: workflows on (tenant, workflow_id), last write wins by updated_at."""
    return SqlUpsertSink(engine, workflows, ["tenant", "workflow_id"], "updated_at")


def stored_workflows(engine: sa.Engine) -> dict[tuple[str, int], dict[str, Any]]:
    """Every stored workflow by (tenant, workflow_id)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(workflows)).mappings()
        return {(row["tenant"], row["workflow_id"]): dict(row) for row in rows}


def order_id(number: int) -> str:
    """The id of work order `number`, as CHR and Praxedo share it."""
    return f"WO-{number:06d}"


def seed_work_orders(engine: sa.Engine, count: int) -> None:
    """Work orders 0 .. count - 1, all NEW, as CHR created them."""
    rows = [{"order_id": order_id(n), "title": f"Replace pump {n}", "status": "NEW"} for n in range(count)]
    with engine.begin() as conn:
        conn.execute(sa.insert(work_orders), rows)


WORK_ORDER_STATUSES = ForwardOnly("status", ("NEW", "SCHEDULED", "COMPLETED", "VALIDATED", "CANCELLED", "CLOSED"))
"""CHR's work-order statuses in the order they move: a closed order is never moved back to completed."""


def status_sink(engine: sa.Engine) -> SqlUpdateSink:
    """The Praxedo pull-back's sink: status and completion date of CHR's work orders, by order id."""
    return SqlUpdateSink(engine, work_orders, ["order_id"], ["status", "completed_on"])


def stored_work_orders(engine: sa.Engine) -> dict[str, dict[str, Any]]:
    """Every stored work order by id."""
    with engine.connect() as conn:
        return {row["order_id"]: dict(row) for row in conn.execute(sa.select(work_orders)).mappings()}


def new_workflows_are_inserted_then_only_newer_ones_update(engine: sa.Engine) -> None:
    sink = workflow_sink(engine)
    assert sink.write([workflow(n) for n in range(4)]) == UpsertCounts(inserted=4)

    counts = sink.write(
        [
            workflow(0, T0 + dt.timedelta(microseconds=1), name="Renamed 0", version=2),  # newer by 1 µs
            workflow(1, T0 - dt.timedelta(days=1), name="Stale 1"),  # older
            workflow(2, T0, name="Same time 2"),  # equal
            workflow(3, T0 + dt.timedelta(hours=1), version=5),  # newer
            workflow(4),  # new
        ]
    )

    assert counts == UpsertCounts(inserted=1, updated=2, skipped=2)
    stored = stored_workflows(engine)
    assert stored[(TENANT, 0)] | {"updated_at": None} == workflow(0, None, name="Renamed 0", version=2)
    assert stored[(TENANT, 0)]["updated_at"] == T0 + dt.timedelta(microseconds=1)
    assert (stored[(TENANT, 1)]["name"], stored[(TENANT, 1)]["updated_at"]) == ("Invoice run 1", T0)
    assert stored[(TENANT, 2)]["name"] == "Invoice run 2"
    assert (stored[(TENANT, 3)]["version"], stored[(TENANT, 3)]["updated_at"]) == (5, T0 + dt.timedelta(hours=1))
    assert len(stored) == 5


def a_stored_null_timestamp_is_overwritten_and_an_incoming_null_is_refused(engine: sa.Engine) -> None:
    sink = workflow_sink(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(workflows), [workflow(0, None, name="Imported without a date"), workflow(1)])

    counts = sink.write([workflow(0, T0, name="Dated now"), workflow(1, None, name="Undated"), workflow(2, None)])

    assert (counts.inserted, counts.updated, counts.skipped) == (0, 1, 0)
    assert [(r.key, r.column, r.reason) for r in counts.refused] == [
        ((TENANT, 1), "updated_at", "NULL timestamp: last write wins cannot order it"),
        ((TENANT, 2), "updated_at", "NULL timestamp: last write wins cannot order it"),
    ]
    stored = stored_workflows(engine)
    assert (stored[(TENANT, 0)]["name"], stored[(TENANT, 1)]["name"]) == ("Dated now", "Invoice run 1")
    assert (TENANT, 2) not in stored


def the_same_workflow_id_of_two_tenants_is_two_rows(engine: sa.Engine) -> None:
    sink = workflow_sink(engine)
    sink.write([workflow(7, tenant="acme"), workflow(7, tenant="globex")])

    counts = sink.write([workflow(7, T0 + dt.timedelta(seconds=1), tenant="globex", name="Globex's")])

    assert counts == UpsertCounts(updated=1)
    stored = stored_workflows(engine)
    assert (stored[("acme", 7)]["name"], stored[("globex", 7)]["name"]) == ("Invoice run 7", "Globex's")


def a_key_twice_in_one_batch_keeps_its_newest_record(engine: sa.Engine) -> None:
    sink = workflow_sink(engine)

    counts = sink.write(
        [workflow(1, T0, name="first"), workflow(1, T0 + dt.timedelta(seconds=2), name="newest"), workflow(1, T0)]
    )

    assert counts == UpsertCounts(inserted=1, skipped=2)
    assert stored_workflows(engine)[(TENANT, 1)]["name"] == "newest"


def three_thousand_workflows_are_upserted_with_exact_counts(engine: sa.Engine) -> None:
    sink = workflow_sink(engine)
    assert sink.write([workflow(n) for n in range(0, 3000, 2)]) == UpsertCounts(inserted=1500)

    later = T0 + dt.timedelta(minutes=1)
    counts = sink.write([workflow(n, later if n % 4 == 0 else T0, version=2) for n in range(3000)])

    assert counts == UpsertCounts(inserted=1500, updated=750, skipped=750)
    stored = stored_workflows(engine)
    assert len(stored) == 3000
    assert sum(row["version"] == 2 for row in stored.values()) == 750 + 1500


def a_record_the_database_refuses_is_reported_alone_and_the_others_are_written(engine: sa.Engine) -> None:
    sink = workflow_sink(engine)

    counts = sink.write([workflow(n, version=-1 if n == 3 else 1, name=f"Secret plan {n}") for n in range(10)])

    assert (counts.inserted, counts.updated, counts.skipped) == (9, 0, 0)
    [refused] = counts.refused
    assert (refused.key, refused.column) == ((TENANT, 3), "version")
    assert "ck_zuora_workflow_version" in refused.reason
    assert "Secret plan" not in refused.reason, "a refusal must not carry the rows' data"
    assert sorted(stored_workflows(engine)) == [(TENANT, n) for n in range(10) if n != 3]


def a_record_too_long_for_its_column_is_refused_naming_it(engine: sa.Engine) -> None:
    counts = workflow_sink(engine).write([workflow(1, name="x" * 101), workflow(2)])

    assert counts.inserted == 1
    assert [(r.key, r.column, r.reason) for r in counts.refused] == [
        ((TENANT, 1), "name", "101 characters, the column holds 100")
    ]


def a_newer_row_another_writer_stores_between_lookup_and_write_is_kept(engine: sa.Engine) -> None:
    sink = workflow_sink(engine)
    sink.write([workflow(1)])
    meanwhile = {"name": "Written meanwhile", "updated_at": T0 + dt.timedelta(hours=2)}

    def another_writer(conn: sa.Connection, clause: Any, *_: Any) -> None:
        if _is_upsert(clause):  # the sink's upsert, after its lookup said "newer"
            with engine.begin() as other:
                other.execute(sa.update(workflows).where(workflows.c.workflow_id == 1).values(meanwhile))

    sa.event.listen(engine, "before_execute", another_writer)
    try:
        sink.write([workflow(1, T0 + dt.timedelta(hours=1), name="Older than what is stored by now")])
    finally:
        sa.event.remove(engine, "before_execute", another_writer)

    stored = stored_workflows(engine)[(TENANT, 1)]
    assert (stored["name"], stored["updated_at"]) == (meanwhile["name"], meanwhile["updated_at"])


def _is_upsert(clause: Any) -> bool:
    """Whether a statement is the upsert sink's write: an INSERT, or on PostgreSQL the count of one (its WITH)."""
    froms = clause.get_final_froms() if isinstance(clause, sa.Select) else []
    return isinstance(clause, sa.Insert) or any(isinstance(getattr(f, "element", None), sa.Insert) for f in froms)


def statuses_update_matched_work_orders_and_unknown_orders_come_back_by_key(engine: sa.Engine) -> None:
    seed_work_orders(engine, 3)
    completed = T0 + dt.timedelta(hours=3)

    counts = status_sink(engine).write(
        [
            {"order_id": order_id(0), "status": "COMPLETED", "completed_on": completed, "title": "ignored"},
            {"order_id": order_id(2), "status": "SCHEDULED", "completed_on": None},
            {"order_id": "WO-unknown", "status": "COMPLETED", "completed_on": completed},
        ]
    )

    assert (counts.updated, counts.not_found, counts.refused) == (2, [("WO-unknown",)], [])
    stored = stored_work_orders(engine)
    assert stored[order_id(0)] == {
        "order_id": order_id(0),
        "title": "Replace pump 0",
        "status": "COMPLETED",
        "completed_on": completed,
    }
    assert (stored[order_id(1)]["status"], stored[order_id(2)]["status"]) == ("NEW", "SCHEDULED")
    assert len(stored) == 3, "an update sink never inserts"


def a_status_the_database_refuses_is_isolated_to_its_work_order(engine: sa.Engine) -> None:
    seed_work_orders(engine, 5)

    counts = status_sink(engine).write(
        [{"order_id": order_id(n), "status": "LOST" if n == 1 else "COMPLETED", "completed_on": T0} for n in range(5)]
    )

    assert (counts.updated, counts.not_found) == (4, [])
    [refused] = counts.refused
    assert (refused.key, refused.column) == ((order_id(1),), "status")
    statuses = {order: row["status"] for order, row in stored_work_orders(engine).items()}
    assert statuses == {order_id(n): "NEW" if n == 1 else "COMPLETED" for n in range(5)}


def three_thousand_statuses_update_with_the_missing_ones_returned(engine: sa.Engine) -> None:
    seed_work_orders(engine, 2000)

    counts = status_sink(engine).write(
        [{"order_id": order_id(n), "status": "CANCELLED", "completed_on": None} for n in range(1000, 4000)]
    )

    assert counts.updated == 1000 and counts.refused == []
    assert counts.not_found == [(order_id(n),) for n in range(2000, 4000)]
    statuses = [row["status"] for row in stored_work_orders(engine).values()]
    assert (statuses.count("NEW"), statuses.count("CANCELLED")) == (1000, 1000)


def a_forward_only_status_moves_on_and_is_never_moved_back(engine: sa.Engine) -> None:
    seed_work_orders(engine, 4)
    sink = SqlUpdateSink(engine, work_orders, ["order_id"], ["status", "completed_on"], WORK_ORDER_STATUSES)
    with engine.begin() as conn:  # CHR has closed order 2, and order 3 holds a status the order does not list
        conn.execute(sa.update(work_orders).where(work_orders.c.order_id == order_id(2)).values(status="CLOSED"))
        conn.execute(sa.update(work_orders).where(work_orders.c.order_id == order_id(3)).values(status="ON HOLD"))
    completed = {"status": "COMPLETED", "completed_on": T0}

    counts = sink.write(
        [{"order_id": order_id(n), **completed} for n in range(4)] + [{"order_id": order_id(9), **completed}]
    )

    assert (counts.updated, counts.kept, counts.not_found, counts.refused) == (3, 1, [(order_id(9),)], [])
    again = sink.write(
        [{"order_id": order_id(0), **completed}, {"order_id": order_id(1), "status": "NEW", "completed_on": None}]
    )
    assert (again.updated, again.kept) == (0, 2), "as far on, or further: no write"
    stored = stored_work_orders(engine)
    assert {order: row["status"] for order, row in stored.items()} == {
        order_id(0): "COMPLETED",
        order_id(1): "COMPLETED",
        order_id(2): "CLOSED",
        order_id(3): "COMPLETED",
    }
    assert stored[order_id(1)]["completed_on"] == T0, "a kept row's other columns are not written either"
    [refused] = sink.write([{"order_id": order_id(0), "status": "LOST", "completed_on": None}]).refused
    assert (refused.key, refused.column) == ((order_id(0),), "status")
    assert refused.reason.startswith("status 'LOST' is not one of forward_only.order (NEW, SCHEDULED, COMPLETED")


SCENARIOS = [
    new_workflows_are_inserted_then_only_newer_ones_update,
    a_stored_null_timestamp_is_overwritten_and_an_incoming_null_is_refused,
    the_same_workflow_id_of_two_tenants_is_two_rows,
    a_key_twice_in_one_batch_keeps_its_newest_record,
    three_thousand_workflows_are_upserted_with_exact_counts,
    a_record_the_database_refuses_is_reported_alone_and_the_others_are_written,
    a_record_too_long_for_its_column_is_refused_naming_it,
    a_newer_row_another_writer_stores_between_lookup_and_write_is_kept,
    statuses_update_matched_work_orders_and_unknown_orders_come_back_by_key,
    a_status_the_database_refuses_is_isolated_to_its_work_order,
    three_thousand_statuses_update_with_the_missing_ones_returned,
    a_forward_only_status_moves_on_and_is_never_moved_back,
]
"""Every scenario, each on empty target tables."""
