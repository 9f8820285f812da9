"""What the engine reads an entity's records from: a `Source` of pages, a database table or an HTTP API.

Both kinds give `SourcePage`s of rows in the entity's field order, typed as a driver returns them, and
count what they hold when that is cheap (a `COUNT(*)`, an API's total), for a long sync's progress.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from sync_pipeline.engine.sources.sql_table import (
    SinceFilter,
    SourcePage,
    count_rows,
    cursor_ceiling,
    read_keys,
    read_pages,
)


class Source(Protocol):
    """An entity's records, page by page; raises `SourceUnavailable` when they cannot be read."""

    def pages(self) -> Iterator[SourcePage]:
        """The records, one page at a time."""
        ...

    def count(self) -> int | None:
        """How many records a read will see, when the source can say cheaply; None otherwise."""
        ...

    def describe(self) -> str:
        """Where the records come from, for the run's log (no secret)."""
        ...


class KeyedSource(Source, Protocol):
    """A source that can also read chosen records by key, whatever the mark: those of the retry queue."""

    @property
    def reads_by_key(self) -> bool:
        """Whether `by_keys` can be called (an API needs `source.key_param`)."""
        ...

    def by_keys(self, entity_ids: Sequence[str]) -> Iterator[SourcePage]:
        """The records of these EntityIds (canonical text) it still holds."""
        ...


class SqlTableSource:
    """A table read by keyset pages on its key, from the mark on if `since` is given."""

    def __init__(
        self,
        engine: sa.Engine,
        table: sa.Table,
        columns: Sequence[str],
        key_column: str,
        page_size: int,
        since: SinceFilter | None = None,
    ) -> None:
        self._engine = engine
        self._table = table
        self._columns = columns
        self._key_column = key_column
        self._page_size = page_size
        self._since = since

    def pages(self) -> Iterator[SourcePage]:
        """The table's rows in key order (see `read_pages`)."""
        return read_pages(self._engine, self._table, self._columns, self._key_column, self._page_size, self._since)

    @property
    def reads_by_key(self) -> bool:
        """A table is always read by key."""
        return True

    def by_keys(self, entity_ids: Sequence[str]) -> Iterator[SourcePage]:
        """The rows of these EntityIds, whatever the mark (records of the retry queue, see `queued`)."""
        return read_keys(self._engine, self._table, self._columns, self._key_column, entity_ids)

    def count(self) -> int | None:
        """One `COUNT(*)` of the rows a read will see."""
        return count_rows(self._engine, self._table, self._since)

    def ceiling(self, cursor_column: str) -> Any:
        """The cursor column's highest value before the read begins: the mark may not pass it, since rows
        are read in key order and one changed during the read may be behind the reader."""
        return cursor_ceiling(self._engine, self._table, cursor_column)

    def describe(self) -> str:
        """The table's name, and the mark it is read from."""
        since = f" where {self._since.column} >= {self._since.value}" if self._since else ""
        return f"{self._table.fullname}{since}"
