"""What a since-cursor read and TB_R_SYNC_CURSOR must do on every database: the same scenarios on
SQLite and the real servers."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from sync_pipeline.engine.sources.sql_table import SinceFilter, count_rows, cursor_ceiling, read_pages
from sync_pipeline.engine.state.since_cursor import CursorStore, CursorWatermark, cursor_value
from sync_pipeline.engine.tables import DateTime2, cursor_table
from sync_pipeline.specs.model import Field, FieldType

MODIFIED_ON = Field("ModifiedOn", FieldType.DATETIME, nullable=True)
MARK = dt.datetime(2024, 6, 1, 3, 0, 0, 250_000)
ROWS = 2500
PAGE = 300


def changed_records(engine: sa.Engine) -> sa.Table:
    """A source table of 2,500 rows keyed 1..2500: odd keys modified before the mark, every tenth at
    exactly the mark, the other even keys after it, and every 250th without a ModifiedOn."""
    table = sa.Table(
        "ChangedRecords",
        sa.MetaData(),
        sa.Column("Id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("Name", sa.Unicode(50), nullable=False),
        sa.Column("ModifiedOn", DateTime2, nullable=True),
    )
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [_row(key) for key in range(ROWS, 0, -1)])  # keys inserted out of order
    return table


def _row(key: int) -> dict[str, object]:
    if key % 250 == 0:
        modified: dt.datetime | None = None
    elif key % 10 == 0:
        modified = MARK
    elif key % 2:
        modified = MARK - dt.timedelta(microseconds=1 + key)
    else:
        modified = MARK + dt.timedelta(seconds=key)
    return {"Id": key, "Name": f"record {key}", "ModifiedOn": modified}


def newer_half_at_or_past_the_mark(key: int) -> bool:
    """Whether row `key` is one a read from MARK must return."""
    return key % 2 == 0 and key % 250 != 0


def read_keys(engine: sa.Engine, table: sa.Table, since: SinceFilter | None) -> list[int]:
    """Every key a read yields, in the order it yields them."""
    pages = read_pages(engine, table, ["Id", "Name", "ModifiedOn"], "Id", PAGE, since)
    return [row[0] for page in pages for row in page.rows]


def only_rows_changed_at_or_since_the_mark_are_read_in_key_order_over_several_pages(engine: sa.Engine) -> None:
    """From the stored mark's text: the newer half, rows exactly at the mark included, in key order;
    rows before the mark and rows without a ModifiedOn are not read, and the count agrees."""
    table = changed_records(engine)
    since = SinceFilter("ModifiedOn", cursor_value(MARK.isoformat(), MODIFIED_ON))

    keys = read_keys(engine, table, since)

    expected = [key for key in range(1, ROWS + 1) if newer_half_at_or_past_the_mark(key)]
    assert keys == expected and len(keys) == 1240 > 4 * PAGE
    assert {key for key in keys if key % 10 == 0} == {key for key in range(10, ROWS + 1, 10) if key % 250}
    assert count_rows(engine, table, since) == len(expected)
    assert read_keys(engine, table, None) == list(range(1, ROWS + 1)) and count_rows(engine, table) == ROWS


def a_row_changed_behind_the_reader_during_the_read_is_read_by_the_next_run(engine: sa.Engine) -> None:
    """Key order is no cursor order: a row behind the reader changes, then one ahead of it even later;
    the mark stops at the source's highest value when the read began, so the next run reads both."""
    table = changed_records(engine)
    watermark = CursorWatermark(MODIFIED_ON, MARK.isoformat())
    watermark.cap(cursor_ceiling(engine, table, "ModifiedOn"))
    pages = read_pages(engine, table, ["Id", "Name", "ModifiedOn"], "Id", PAGE, SinceFilter("ModifiedOn", MARK))
    first = next(pages)
    changed = MARK + dt.timedelta(hours=2)
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.Id == 3).values(ModifiedOn=changed))
        conn.execute(sa.update(table).where(table.c.Id == 2001).values(ModifiedOn=changed + dt.timedelta(seconds=1)))
    for page in [first, *pages]:
        watermark.observe([row[2] for row in page.rows], held=False)

    mark = watermark.next_text()

    assert mark == (MARK + dt.timedelta(seconds=2498)).isoformat()  # row 2498's, the highest before the read
    assert read_keys(engine, table, SinceFilter("ModifiedOn", cursor_value(mark, MODIFIED_ON))) == [3, 2001, 2498]


def a_mark_is_created_then_moved_and_each_entity_keeps_its_own(store: CursorStore) -> None:
    """No row before the first save; a save creates the row, the next moves it; entities never mix."""
    assert store.load("praxedo/WorkOrder") is None

    store.save("praxedo/WorkOrder", "2024-06-01T03:00:00.250000")
    store.save("praxedo/Customer", "17")
    store.save("praxedo/WorkOrder", "2024-06-02T04:00:00")

    assert store.load("praxedo/WorkOrder") == "2024-06-02T04:00:00"
    assert store.load("praxedo/Customer") == "17"
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(cursor_table.c.EntityType, cursor_table.c.CursorValue)).all()
    assert sorted(rows) == [("praxedo/Customer", "17"), ("praxedo/WorkOrder", "2024-06-02T04:00:00")]
