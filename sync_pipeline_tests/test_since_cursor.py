"""The since-cursor state: canonical marks, the rule that moves them, TB_R_SYNC_CURSOR, and the SQL
source's since filter (SQLite; the statements also compiled for SQL Server)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from sync_pipeline.engine.sources.sql_table import SinceFilter, page_queries, read_pages, row_count_query
from sync_pipeline.engine.state import since_cursor
from sync_pipeline.engine.state.since_cursor import (
    CursorStore,
    CursorWatermark,
    cursor_text,
    cursor_value,
    next_mark,
)
from sync_pipeline.engine.state.tracking import TrackingUnavailable
from sync_pipeline.engine.tables import DateTime2, cursor_table, log_metadata
from sync_pipeline.specs.model import Field, FieldType

from .since_scenarios import (
    MARK,
    MODIFIED_ON,
    PAGE,
    ROWS,
    a_mark_is_created_then_moved_and_each_entity_keeps_its_own,
    a_row_changed_behind_the_reader_during_the_read_is_read_by_the_next_run,
    changed_records,
    newer_half_at_or_past_the_mark,
    only_rows_changed_at_or_since_the_mark_are_read_in_key_order_over_several_pages,
)

MSSQL = mssql.dialect(paramstyle="qmark")
MAX_PARAMETERS = 2100
VERSION = Field("RowVersion", FieldType.INT)
CODE = Field("Code", FieldType.TEXT)
JUNE_1 = dt.datetime(2024, 6, 1, 3, 0)


def at(hours: float) -> dt.datetime:
    """June 1st 2024, 03:00 plus `hours`."""
    return JUNE_1 + dt.timedelta(hours=hours)


# Canonical text


def test_a_timestamp_mark_is_iso_8601_whether_it_came_as_a_datetime_or_as_iso_text() -> None:
    assert cursor_text(dt.datetime(2024, 6, 1, 3, 0, 0, 250_000), MODIFIED_ON) == "2024-06-01T03:00:00.250000"
    assert cursor_text("2024-06-01 03:00:00.25", MODIFIED_ON) == "2024-06-01T03:00:00.250000"
    assert cursor_text("2024-06-01T03:00:00Z", MODIFIED_ON) == "2024-06-01T03:00:00+00:00"
    assert cursor_value("2024-06-01T03:00:00.250000", MODIFIED_ON) == dt.datetime(2024, 6, 1, 3, 0, 0, 250_000)


def test_an_integer_mark_is_decimal_digits_and_a_text_mark_is_kept_as_it_is() -> None:
    assert cursor_text(1_000_000_007, VERSION) == "1000000007"
    assert cursor_value("1000000007", VERSION) == 1_000_000_007
    assert cursor_text("AB-007 ", CODE) == "AB-007 " and cursor_value("AB-007 ", CODE) == "AB-007 "


@pytest.mark.parametrize(
    ("value", "field", "problem"),
    [
        ("yesterday", MODIFIED_ON, "'yesterday' is no ISO-8601 timestamp"),
        (dt.date(2024, 6, 1), MODIFIED_ON, "datetime.date(2024, 6, 1) is no ISO-8601 timestamp"),
        ("1e3", VERSION, "'1e3' is no integer in decimal digits"),
        (True, VERSION, "True is no integer in decimal digits"),
        (7, CODE, "7 is no text"),
        ("0.5", Field("Amount", FieldType.DECIMAL), "is of type decimal; a cursor must be one of datetime, int, text"),
    ],
)
def test_a_value_that_cannot_be_a_cursor_is_refused_naming_the_field(value: object, field: Field, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"cursor field {field.name}")) as refused:
        cursor_text(value, field)
    assert problem in str(refused.value)


# The rule that moves the mark


def test_a_run_whose_batches_all_went_out_moves_the_mark_to_the_newest_value_read() -> None:
    watermark = CursorWatermark(MODIFIED_ON, at(0).isoformat())

    watermark.observe([at(3), at(1)], held=False)
    watermark.observe([at(2).isoformat(), None], held=False)

    assert watermark.next_text() == at(3).isoformat()


def test_a_failed_batch_holds_the_mark_at_its_oldest_record_so_the_next_run_reads_it_again() -> None:
    watermark = CursorWatermark(MODIFIED_ON, at(0).isoformat())

    watermark.observe([at(1), at(9)], held=False)
    watermark.observe([at(5), at(4), at(7)], held=True)
    watermark.observe([at(6), at(4.5)], held=True)
    watermark.observe([at(8)], held=False)

    assert watermark.next_text() == at(4).isoformat()  # read again from 04:00 inclusive: 4, 4.5, 5, 6, 7 (and 8, 9)


def test_a_held_batch_never_moves_the_mark_below_where_it_was() -> None:
    watermark = CursorWatermark(VERSION, "40")

    watermark.observe([40, 41], held=True)  # 40 is read again at every run from 40, inclusive
    watermark.observe([55], held=False)

    assert watermark.next_text() is None


def test_a_read_that_stopped_early_leaves_the_mark_where_it_was() -> None:
    watermark = CursorWatermark(VERSION, "40")
    watermark.observe([41, 90], held=False)

    watermark.stopped()

    assert watermark.next_text() is None


def test_a_run_that_read_nothing_leaves_the_mark_and_a_first_run_that_read_something_sets_one() -> None:
    assert CursorWatermark(VERSION, "40").next_text() is None
    assert CursorWatermark(VERSION, None).next_text() is None
    first = CursorWatermark(VERSION, None)
    first.observe([7, 3, None], held=False)
    assert first.next_text() == "7"


def test_a_held_record_without_a_cursor_value_keeps_the_first_run_from_setting_a_mark_that_would_exclude_it() -> None:
    watermark = CursorWatermark(VERSION, None)

    watermark.observe([7, 8], held=False)
    watermark.observe([9, None], held=True)

    assert watermark.next_text() is None


def test_text_marks_compare_as_python_strings() -> None:
    watermark = CursorWatermark(CODE, "B")

    watermark.observe(["B", "a", "C"], held=False)  # "a" > "C" by code point

    assert watermark.next_text() == "a"


@pytest.mark.parametrize(
    ("previous", "values", "says"),
    [
        (
            None,
            [at(1), at(2).replace(tzinfo=dt.UTC)],
            "has a time zone but the mark and the values before it have none",
        ),
        ("2024-06-01T03:00:00+00:00", [at(1)], "has no time zone but the mark and the values before it have one"),
    ],
)
def test_naive_and_aware_timestamps_are_never_mixed_silently(
    previous: str | None, values: list[dt.datetime], says: str
) -> None:
    watermark = CursorWatermark(MODIFIED_ON, previous)

    with pytest.raises(ValueError, match="cursor field ModifiedOn") as refused:
        watermark.observe(values, held=False)

    assert says in str(refused.value)


def test_the_rule_as_one_function() -> None:
    assert next_mark(previous=10, newest=30, oldest_held=None, stopped=False) == 30
    assert next_mark(previous=10, newest=30, oldest_held=20, stopped=False) == 20
    assert next_mark(previous=10, newest=30, oldest_held=5, stopped=False) is None
    assert next_mark(previous=10, newest=30, oldest_held=None, stopped=True) is None
    assert next_mark(previous=10, newest=None, oldest_held=None, stopped=False) is None
    assert next_mark(previous=None, newest=30, oldest_held=None, stopped=False) == 30
    assert next_mark(previous=10, newest=30, oldest_held=None, stopped=False, ceiling=25) == 25
    assert next_mark(previous=10, newest=30, oldest_held=20, stopped=False, ceiling=25) == 20
    assert next_mark(previous=10, newest=30, oldest_held=None, stopped=False, ceiling=8) is None


def test_a_source_that_held_no_cursor_value_when_the_read_began_keeps_the_mark_whatever_came_during_it() -> None:
    watermark = CursorWatermark(VERSION, None)
    watermark.cap(None)

    watermark.observe([3, 4], held=False)

    assert watermark.next_text() is None


# TB_R_SYNC_CURSOR


@pytest.fixture
def store(tmp_path: Path) -> CursorStore:
    """The cursor store on a fresh SQLite Log database with every Log table."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    log_metadata.create_all(engine)
    return CursorStore(engine)


def test_a_mark_is_created_then_moved_and_each_entity_keeps_its_own(store: CursorStore) -> None:
    a_mark_is_created_then_moved_and_each_entity_keeps_its_own(store)


def test_saving_a_mark_records_when_it_moved(store: CursorStore) -> None:
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    store.save("praxedo/WorkOrder", "41")

    with store.engine.connect() as conn:
        moved = conn.execute(sa.select(cursor_table.c.SyncTimestamp)).scalar_one()
    assert before <= moved <= dt.datetime.now(dt.UTC).replace(tzinfo=None)


def test_a_log_database_without_the_cursor_table_is_unavailable_naming_the_script_that_creates_it(
    tmp_path: Path,
) -> None:
    store = CursorStore(sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}"))

    with pytest.raises(TrackingUnavailable, match=re.escape("sql/mssql/TB_R_SYNC_CURSOR.sql")):
        store.load("praxedo/WorkOrder")
    with pytest.raises(TrackingUnavailable, match="the mark stays, so the next run reads these records again"):
        store.save("praxedo/WorkOrder", "41")


def test_sql_server_reads_and_moves_a_mark_with_three_typed_parameters_at_most() -> None:
    load, move, create = (
        statement.compile(dialect=MSSQL) for statement in (since_cursor._load, since_cursor._move, since_cursor._create)
    )

    assert str(load).endswith("FROM [TB_R_SYNC_CURSOR] \nWHERE [TB_R_SYNC_CURSOR].[EntityType] = ?")
    assert str(move) == (
        "UPDATE [TB_R_SYNC_CURSOR] SET [CursorValue]=?, [SyncTimestamp]=? WHERE [TB_R_SYNC_CURSOR].[EntityType] = ?"
    )
    assert (
        str(create) == "INSERT INTO [TB_R_SYNC_CURSOR] ([EntityType], [CursorValue], [SyncTimestamp]) VALUES (?, ?, ?)"
    )
    bound = {name: bind.type.compile(dialect=MSSQL) for name, bind in create.binds.items()}
    assert bound == {"b_EntityType": "NVARCHAR(100)", "b_CursorValue": "NVARCHAR(100)", "b_SyncTimestamp": "DATETIME2"}
    assert max(len(compiled.positiontup or []) for compiled in (load, move, create)) == 3


# The SQL source's since filter


@pytest.fixture
def source(tmp_path: Path) -> sa.Engine:
    """A fresh SQLite source database."""
    return sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")


def test_only_rows_changed_at_or_since_the_mark_are_read_in_key_order_over_several_pages(source: sa.Engine) -> None:
    only_rows_changed_at_or_since_the_mark_are_read_in_key_order_over_several_pages(source)


def test_a_row_changed_behind_the_reader_during_the_read_is_read_by_the_next_run(source: sa.Engine) -> None:
    a_row_changed_behind_the_reader_during_the_read_is_read_by_the_next_run(source)


def test_a_row_the_driver_cannot_read_in_a_filtered_page_is_reported_alone_and_the_filter_still_holds(
    source: sa.Engine,
) -> None:
    table = changed_records(source)
    with source.begin() as conn:  # text that is not UTF-8 fails the page; it is then read key by key
        conn.execute(sa.text('UPDATE "ChangedRecords" SET "Name" = CAST(x\'ff\' AS TEXT) WHERE "Id" = 4'))
    since = SinceFilter("ModifiedOn", MARK)

    pages = list(read_pages(source, table, ["Id", "Name", "ModifiedOn"], "Id", PAGE, since))

    (unreadable,) = [row for page in pages for row in page.unreadable]
    assert unreadable.key == 4 and "column Name" in unreadable.reason
    newer = [key for key in range(1, ROWS + 1) if newer_half_at_or_past_the_mark(key)]
    assert [row[0] for row in pages[0].rows] == [key for key in newer[:PAGE] if key != 4]
    assert [row[0] for page in pages for row in page.rows] == [key for key in newer if key != 4]


def test_without_a_filter_the_page_queries_are_exactly_what_they_were(source: sa.Engine) -> None:
    table = changed_records(source)

    plain = page_queries(table, ["Id", "Name"], "Id", 3000)
    unfiltered = page_queries(table, ["Id", "Name"], "Id", 3000, since_column=None)

    for name in ("first", "from_key", "after_key", "keys_from", "keys_first", "keys_after", "one_key", "null_keys"):
        assert "ModifiedOn" not in str(getattr(plain, name).compile(dialect=MSSQL))
        assert str(getattr(plain, name).compile(dialect=MSSQL)) == str(getattr(unfiltered, name).compile(dialect=MSSQL))
    assert str(row_count_query(table).compile(dialect=MSSQL)) == "SELECT count(*) AS count_1 \nFROM [ChangedRecords]"


def test_on_sql_server_every_filtered_page_query_is_top_with_the_mark_bound_as_datetime2(source: sa.Engine) -> None:
    table = changed_records(source)

    queries = page_queries(table, ["Id", "Name", "ModifiedOn"], "Id", 3000, since_column="ModifiedOn")

    paged = {
        queries.first: (3000, ""),
        queries.keys_first: (3000, ""),
        queries.from_key: (3001, " AND [ChangedRecords].[Id] >= ?"),
        queries.keys_from: (3001, " AND [ChangedRecords].[Id] >= ?"),
        queries.after_key: (3000, " AND [ChangedRecords].[Id] > ?"),
        queries.keys_after: (3000, " AND [ChangedRecords].[Id] > ?"),
    }
    for query, (top, keyset) in paged.items():
        compiled = query.params(since=MARK, last_key=7).compile(
            dialect=MSSQL, compile_kwargs={"render_postcompile": True}
        )
        sql = str(compiled)
        assert re.search(rf"^SELECT TOP {top}\b", sql), sql
        where = "WHERE [ChangedRecords].[ModifiedOn] >= ?"
        assert sql.endswith(f"{where}{keyset} ORDER BY [ChangedRecords].[Id]") or (
            not keyset and sql.endswith(f"{where} AND [ChangedRecords].[Id] IS NOT NULL ORDER BY [ChangedRecords].[Id]")
        ), sql
        assert len(compiled.positiontup or []) <= 2 < MAX_PARAMETERS
        assert compiled.binds["since"].type.compile(dialect=MSSQL) == "DATETIME2"
    for query in (queries.one_key, *queries.one_key_column.values()):
        sql = str(query.compile(dialect=MSSQL))
        assert sql.endswith("WHERE [ChangedRecords].[ModifiedOn] >= ? AND [ChangedRecords].[Id] = ?")
    assert str(queries.null_keys.compile(dialect=MSSQL)).endswith(
        "WHERE [ChangedRecords].[ModifiedOn] >= ? AND [ChangedRecords].[Id] IS NULL"
    )
    counted = row_count_query(table, "ModifiedOn").compile(dialect=MSSQL)
    assert str(counted).endswith("WHERE [ChangedRecords].[ModifiedOn] >= ?") and len(counted.positiontup or []) == 1


def test_the_mark_is_bound_in_the_cursor_column_s_own_type(source: sa.Engine) -> None:
    table = changed_records(source)

    first = page_queries(table, ["Id"], "Id", 3000, since_column="ModifiedOn").first

    assert first.compile(dialect=MSSQL).binds["since"].type is table.c.ModifiedOn.type
    assert table.c.ModifiedOn.type is DateTime2
