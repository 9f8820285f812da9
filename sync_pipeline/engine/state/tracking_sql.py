"""The fastest safe SQL for looking tracked IDs up and for writing a batch's tracking rows.

Looking up a list of IDs (a page's fingerprint hits, confirmed): PostgreSQL takes them as one
array parameter, joined as `unnest(:ids)` (an `= ANY(:ids)` is planned as a sequential scan once
the table is large); every other dialect gets `IN (...)` lists of at most 2,000 IDs, which with
EntityType stays under SQL Server's 2,100 parameters. Writing a batch's rows: PostgreSQL (psycopg)
streams them with COPY, as one text block, inside the caller's transaction; SQL Server's engines
use pyodbc `fast_executemany`; MariaDB's and SQLite's drivers batch an executemany themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sync_pipeline.engine.tables import tracking_table

MAX_IDS_PER_LOOKUP = 2000
"""IDs in one `IN (...)`: with EntityType that is 2001 parameters, under SQL Server's 2100."""
IDS_PER_ARRAY = 100_000
"""IDs in one PostgreSQL array parameter: a whole page, whatever the batch size."""

_COLUMNS = ("EntityType", "EntityId", "SyncTimestamp")
_COPY_TEXT_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_TEXT_SPECIALS = tuple(map(chr, _COPY_TEXT_ESCAPES))


def id_lookup(dialect_name: str) -> tuple[sa.Select[Any], int]:
    """The lookup of tracked IDs for this dialect (binds entity_type, entity_ids) and its chunk size."""
    query = sa.select(tracking_table.c.EntityId).where(tracking_table.c.EntityType == sa.bindparam("entity_type"))
    if dialect_name == "postgresql":
        ids = sa.bindparam("entity_ids", type_=postgresql.ARRAY(sa.Unicode()))
        page = sa.func.unnest(ids).table_valued("id").render_derived(name="page")
        return query.join(page, tracking_table.c.EntityId == page.c.id), IDS_PER_ARRAY
    return query.where(tracking_table.c.EntityId.in_(sa.bindparam("entity_ids", expanding=True))), MAX_IDS_PER_LOOKUP


def tracked_ids_query(entity: str, tracked_before: dt.datetime | None) -> sa.Select[Any]:
    """Every tracked ID of `entity` (before `tracked_before`, if given): one statement of one or two
    parameters whatever the count, streamed by the caller, in no particular order."""
    query = sa.select(tracking_table.c.EntityId).where(tracking_table.c.EntityType == entity)
    if tracked_before is not None:
        query = query.where(tracking_table.c.SyncTimestamp < tracked_before)
    return query


def insert_tracking_rows(conn: sa.Connection, entity: str, entity_ids: Sequence[str], now: dt.datetime) -> None:
    """Track `entity_ids` of `entity` at `now` on `conn`, inside the transaction the caller holds."""
    if not entity_ids:
        return
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        quote = conn.dialect.identifier_preparer.quote
        copy_sql = f"COPY {quote(tracking_table.name)} ({', '.join(quote(c) for c in _COLUMNS)}) FROM STDIN"
        prefix = f"{entity.translate(_COPY_TEXT_ESCAPES)}\t"
        suffix = f"\t{now.isoformat()}\n"
        block = prefix + (suffix + prefix).join(_copy_escaped(entity_ids)) + suffix
        try:
            with conn.connection.driver_connection.cursor() as cursor, cursor.copy(copy_sql) as copy:  # type: ignore[union-attr]
                copy.write(block)
        except conn.dialect.loaded_dbapi.Error as exc:
            # The raw cursor bypasses SQLAlchemy: wrap its error as SQLAlchemy would (UniqueViolation
            # becomes IntegrityError), so callers handle it as any other database error.
            raise sa.exc.DBAPIError.instance(copy_sql, None, exc, conn.dialect.loaded_dbapi.Error) from exc
        return
    rows = [{"EntityType": entity, "EntityId": entity_id, "SyncTimestamp": now} for entity_id in entity_ids]
    conn.execute(sa.insert(tracking_table), rows)


def _copy_escaped(entity_ids: Sequence[str]) -> Sequence[str]:
    """The IDs escaped for COPY's text format; checked on all of them at once, as GUIDs never need it."""
    together = "".join(entity_ids)
    if any(special in together for special in _COPY_TEXT_SPECIALS):
        return [entity_id.translate(_COPY_TEXT_ESCAPES) for entity_id in entity_ids]
    return entity_ids
