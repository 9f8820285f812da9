"""Reading an entity's source table page by page, by keyset on its key column.

Each page is `WHERE key > :last_key ORDER BY key` with a row limit (TOP on SQL Server): no OFFSET
scans and never more than one page in memory. The comparison happens in SQL against the typed
column, because uniqueidentifier sorts differently from any Python order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error


class SourceUnavailable(Exception):
    """The source database could not be read; this entity stops, the others go on."""


def page_queries(
    table: sa.Table, columns: Sequence[str], key_column: str, page_size: int
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The first page's query and the next pages' query (which binds `last_key`)."""
    key = table.c[key_column]
    first = sa.select(*(table.c[name] for name in columns)).order_by(key).limit(page_size)
    return first, first.where(key > sa.bindparam("last_key", type_=key.type))


def read_pages(
    engine: sa.Engine, table: sa.Table, columns: Sequence[str], key_column: str, page_size: int
) -> Iterator[Sequence[sa.Row[Any]]]:
    """Yield the table's rows in key order, `page_size` at a time, ending each read transaction."""
    first, after = page_queries(table, columns, key_column, page_size)
    key_index = list(columns).index(key_column)
    try:
        with engine.connect() as conn:
            page = conn.execute(first).all()
            while page:
                conn.rollback()
                yield page
                if len(page) < page_size:
                    return
                page = conn.execute(after, {"last_key": page[-1][key_index]}).all()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceUnavailable(f"cannot read {table.fullname}: {describe_db_error(exc)}") from exc
