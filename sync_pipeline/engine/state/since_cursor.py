"""TB_R_SYNC_CURSOR: the "changed since the last run" state, a high-water mark per entity.

A run reads the source from the stored mark, inclusive (`WHERE cursor >= :since`): records holding
exactly the mark's value are read again, which idempotent sinks (tracking, row hashes, upserts) make
harmless, and which is what brings back a record that failed at the mark. The mark moves only past
records that were delivered or quarantined in TB_R_SYNC_REJECTED: a record that failed transiently is
read again next run, never skipped (dlt#1980 and meltano/sdk#133 lose such records).

The mark is kept as canonical text per field type: ISO-8601 for a timestamp, decimal digits for an
integer, text as is. Text marks are compared as Python `str` (by code point), so a text cursor needs a
column whose collation orders the same way (a binary collation); timestamps and integers are compared
as values. Rows whose cursor is NULL are read only while there is no mark (the first run).

The source is read in key order, not cursor order: a row changed while the read is under way may be
behind the reader already while a row ahead of it shows an even newer value. So the mark never passes
the highest value the source held when the read began (its ceiling, `cursor_ceiling` in the SQL
source): whatever changed after that is read next run. A writer's transaction that stamped its rows
before the ceiling was taken but committed after it is not covered: that needs a look-back margin.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.state.tracking import TrackingUnavailable, utc_now
from sync_pipeline.engine.tables import cursor_table
from sync_pipeline.specs.model import Field, FieldType

CURSOR_TYPES = (FieldType.DATETIME, FieldType.INT, FieldType.TEXT)
"""The field types a high-water mark can be kept in."""

_DECIMAL = re.compile(r"-?[0-9]+")
_table = cursor_table


def cursor_value(value: Any, field: Field) -> Any:
    """The typed, comparable value of a cursor given as the source returns it or as canonical text:
    a datetime (from a datetime or ISO-8601 text), an int (from an int or decimal digits) or a str."""
    if field.type is FieldType.DATETIME:
        if isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value)
            except ValueError:
                pass
        raise ValueError(f"cursor field {field.name}: {value!r} is no ISO-8601 timestamp")
    if field.type is FieldType.INT:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _DECIMAL.fullmatch(value):
            return int(value)
        raise ValueError(f"cursor field {field.name}: {value!r} is no integer in decimal digits")
    if field.type is FieldType.TEXT:
        if isinstance(value, str):
            return value
        raise ValueError(f"cursor field {field.name}: {value!r} is no text")
    allowed = ", ".join(kind.value for kind in CURSOR_TYPES)
    raise ValueError(f"cursor field {field.name} is of type {field.type.value}; a cursor must be one of {allowed}")


def cursor_text(value: Any, field: Field) -> str:
    """The canonical text of a cursor value, as TB_R_SYNC_CURSOR keeps it."""
    typed = cursor_value(value, field)
    return typed.isoformat() if isinstance(typed, dt.datetime) else str(typed)


def _is_aware(value: Any) -> bool | None:
    """Whether a timestamp carries a time zone (None for a value that is no timestamp)."""
    return value.utcoffset() is not None if isinstance(value, dt.datetime) else None


def next_mark(
    previous: Any | None, newest: Any | None, oldest_held: Any | None, stopped: bool, ceiling: Any | None = None
) -> Any | None:
    """The mark to save after a read, or None to leave the stored one: nothing after a read that stopped
    early or saw nothing; else the newest value seen, or, if a batch was held, its oldest value (the
    inclusive read brings it back), never past the ceiling (if known) nor at or below the previous mark."""
    if stopped or newest is None:
        return None
    candidate = newest if oldest_held is None else oldest_held
    if ceiling is not None and ceiling < candidate:
        candidate = ceiling
    if previous is not None and candidate <= previous:
        return None
    return candidate


class CursorWatermark:
    """The mark of one entity's run, from the cursor values of the batches it sent; thread-safe, since
    batches may be sent on several threads."""

    def __init__(self, field: Field, previous_text: str | None) -> None:
        self._field = field
        self._previous = None if previous_text is None else cursor_value(previous_text, field)
        self._aware = _is_aware(self._previous)
        self._newest: Any | None = None
        self._oldest_held: Any | None = None
        self._held_without_value = False
        self._stopped = False
        self._capped = False
        self._ceiling: Any | None = None
        self._lock = threading.Lock()

    def cap(self, ceiling: Any | None) -> None:
        """The highest cursor value in the source when the read began (None: it held none); the mark
        never passes it, since a row changed during the read may be behind the reader's keyset."""
        typed = None if ceiling is None else cursor_value(ceiling, self._field)
        with self._lock:
            if typed is not None:
                self._check_zone(typed)
            self._capped, self._ceiling = True, typed

    def observe(self, values: Iterable[Any], held: bool) -> None:
        """One batch's cursor values (None ignored); `held`: some of its records ended neither delivered
        nor quarantined, so none of its values may be passed."""
        given = list(values)
        typed = [cursor_value(value, self._field) for value in given if value is not None]
        with self._lock:
            for value in typed:
                self._check_zone(value)
            if held and len(typed) < len(given):
                self._held_without_value = True
            if not typed:
                return
            newest, oldest = max(typed), min(typed)
            if self._newest is None or newest > self._newest:
                self._newest = newest
            if held and (self._oldest_held is None or oldest < self._oldest_held):
                self._oldest_held = oldest

    def stopped(self) -> None:
        """The read did not finish (the entity stopped early): records past those seen were never read,
        so the mark stays where it is."""
        with self._lock:
            self._stopped = True

    def next_text(self) -> str | None:
        """The canonical text to save in TB_R_SYNC_CURSOR, or None to leave the stored mark as is.

        A held batch with a record without a cursor value keeps the mark too: once there is a mark
        such rows are no longer read, so only a run without one can bring it back. So does a source
        that held no cursor value when the read began: all it read came during the read."""
        with self._lock:
            if self._held_without_value or (self._capped and self._ceiling is None):
                return None
            mark = next_mark(self._previous, self._newest, self._oldest_held, self._stopped, self._ceiling)
        return None if mark is None else cursor_text(mark, self._field)

    def _check_zone(self, value: Any) -> None:
        """Naive and aware timestamps have no order between them: refuse to mix them, naming the field."""
        aware = _is_aware(value)
        if aware is None:
            return
        if self._aware is None:
            self._aware = aware
        elif aware != self._aware:
            has, lacks = ("has a time zone", "have none") if aware else ("has no time zone", "have one")
            raise ValueError(
                f"cursor field {self._field.name}: {value.isoformat()} {has} but the mark and the values "
                f"before it {lacks}; naive and aware timestamps cannot be compared"
            )


class CursorStore:
    """Reads and writes TB_R_SYNC_CURSOR in the Log database: one row per entity."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def load(self, entity_type: str) -> str | None:
        """The entity's stored mark as canonical text, or None before its first completed run."""
        try:
            with self.engine.connect() as conn:
                found = conn.execute(_load, {"entity_type": entity_type}).scalar_one_or_none()
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot read {_table.name}: {describe_db_error(exc)}") from exc
        return None if found is None else str(found)

    def save(self, entity_type: str, text: str) -> None:
        """Move the entity's mark to `text`: an UPDATE, then an INSERT if there was no row, in one
        transaction. The entity lock keeps every other writer of this row out, so no upsert is needed
        (and the two plain statements are the same on every dialect)."""
        params = {"b_EntityType": entity_type, "b_CursorValue": text, "b_SyncTimestamp": utc_now()}
        try:
            with self.engine.begin() as conn:
                if conn.execute(_move, params).rowcount == 0:
                    conn.execute(_create, params)
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(
                f"cannot write {_table.name} (the mark stays, so the next run reads these records again): "
                f"{describe_db_error(exc)}"
            ) from exc


_load = sa.select(_table.c.CursorValue).where(_table.c.EntityType == sa.bindparam("entity_type"))
_move = (
    sa.update(_table)
    .where(_table.c.EntityType == sa.bindparam("b_EntityType"))
    .values(CursorValue=sa.bindparam("b_CursorValue"), SyncTimestamp=sa.bindparam("b_SyncTimestamp"))
)
_create = sa.insert(_table).values(
    EntityType=sa.bindparam("b_EntityType"),
    CursorValue=sa.bindparam("b_CursorValue"),
    SyncTimestamp=sa.bindparam("b_SyncTimestamp"),
)
"""The row's two statements, bound by the same `b_` names (an UPDATE's SET may not reuse a column's)."""
