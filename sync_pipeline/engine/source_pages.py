"""Reading an entity's source table page by page, by keyset on its key column.

Each page is `WHERE key > :last_key ORDER BY key` with a row limit (TOP on SQL Server): no OFFSET
scans and never more than one page in memory. The comparison happens in SQL against the typed
column, because uniqueidentifier sorts differently from any Python order.

A GUID key is read as text (`CAST(key AS VARCHAR(36))`): the database prints it in one pass, where
the driver would build a `uuid.UUID` per row only for the sync to print it again (a third of the
reading time on PostgreSQL). Each page's last key goes back to the comparison as a `uuid.UUID`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.entity_ids import GUID_TEXT_LENGTH


class SourceUnavailable(Exception):
    """The source database could not be read; this entity stops, the others go on."""


def _key_as_text(table: sa.Table, key_column: str) -> bool:
    return isinstance(table.c[key_column].type, sa.Uuid)


def page_queries(
    table: sa.Table, columns: Sequence[str], key_column: str, page_size: int
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The first page's query and the next pages' query (which binds `last_key`)."""
    key = table.c[key_column]
    as_text = _key_as_text(table, key_column)
    selected = [
        sa.cast(key, sa.String(GUID_TEXT_LENGTH)).label(name) if as_text and name == key_column else table.c[name]
        for name in columns
    ]
    first = sa.select(*selected).order_by(key).limit(page_size)
    return first, first.where(key > sa.bindparam("last_key", type_=key.type))


def read_pages(
    engine: sa.Engine, table: sa.Table, columns: Sequence[str], key_column: str, page_size: int
) -> Iterator[Sequence[sa.Row[Any]]]:
    """Yield the table's rows in key order, `page_size` at a time, ending each read transaction."""
    first, after = page_queries(table, columns, key_column, page_size)
    key_index = list(columns).index(key_column)
    typed_key: Callable[[Any], Any] = uuid.UUID if _key_as_text(table, key_column) else _same
    try:
        with engine.connect() as conn:
            page = conn.execute(first).all()
            while page:
                conn.rollback()
                yield page
                if len(page) < page_size:
                    return
                page = conn.execute(after, {"last_key": typed_key(page[-1][key_index])}).all()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceUnavailable(f"cannot read {table.fullname}: {describe_db_error(exc)}") from exc


def _same(value: Any) -> Any:
    return value
