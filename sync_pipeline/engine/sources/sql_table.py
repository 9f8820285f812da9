"""Reading an entity's source table page by page, by keyset on its key column.

Each page is `WHERE key >= :last_key ORDER BY key` with a row limit (TOP on SQL Server): no OFFSET
scans and never more than one page in memory. The comparison happens in SQL, in the key column's
own type as the database declares it (reflected once per run: the model says GUID, the column may
be uniqueidentifier, uuid, CHAR(32) or NVARCHAR(36)), and the last key goes back exactly as it was
read, because uniqueidentifier and text collations sort differently from any Python order.
`>=` re-reads the last key, so copies of it across a page boundary are seen, not skipped.

A uuid-typed key is read as text (`CAST(key AS VARCHAR(36))`): the database prints it in one pass,
where the driver would build a `uuid.UUID` per row only for the sync to print it again (a third of
the reading time on PostgreSQL). A boolean column is read as the driver returns it, so that text in
it is refused by the model instead of becoming True.

One row the driver cannot read (text that is not UTF-8, a timestamp outside Python's range) fails
its whole page; that page is then read again key by key, so only that row is reported as
unreadable. Rows with a NULL key are excluded from paging and counted once per run.

The whole table can also be counted (one `COUNT(*)`), for a long sync's progress to say "of N".

A read (and its count) may be limited to the rows changed since a high-water mark (`SinceFilter`):
every statement then also has `WHERE <cursor> >= :since`, bound in the cursor column's type, and the
keyset by key column is unchanged. Rows whose cursor is NULL fail that comparison: they are read only
by a run without a mark (the first). Without a filter the statements are exactly those above. The
cursor's highest value before the read (`cursor_ceiling`) bounds where the mark may move.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.mapping.entity_ids import GUID_TEXT_LENGTH


class SourceUnavailable(Exception):
    """The source could not be read (a database, an API); this entity stops, the others go on. Trying
    again later may help: the source was down, busy or slow."""


class SourceRefused(SourceUnavailable):
    """The source answered, but not with what the sync can read (a 4xx, a body of another shape, a
    paginator gone wrong, credentials refused): trying again will not help until it or the declaration
    is fixed."""


@dataclass(frozen=True)
class UnreadableRow:
    """A source row the driver could not read, by its key as read alone, and the driver's reason."""

    key: Any
    reason: str


@dataclass(frozen=True)
class SourcePage:
    """One page of the source in key order: the rows read, the ones that could not be, and NULL keys."""

    rows: Sequence[Sequence[Any]]
    unreadable: Sequence[UnreadableRow] = ()
    null_keys: int = 0
    """Rows whose key is NULL: counted once, on the first page, since they can neither be paged nor tracked."""


@dataclass(frozen=True)
class SinceFilter:
    """Only the rows whose `column` is at or past `value` (a high-water mark, typed for the column)."""

    column: str
    value: Any

    @property
    def params(self) -> dict[str, Any]:
        """The bind every filtered statement takes."""
        return {"since": self.value}


@dataclass(frozen=True)
class PageQueries:
    """The statements one entity's read runs; `last_key` is bound in the key column's real type."""

    first: sa.Select[Any]
    from_key: sa.Select[Any]
    """The next page from the last key read (inclusive, one row more), so copies of it are seen."""
    after_key: sa.Select[Any]
    """The next page past the last key: only when one key filled a whole page."""
    keys_from: sa.Select[Any]
    """The keys of a page from the last key: the first step of reading a failed page again."""
    keys_first: sa.Select[Any]
    keys_after: sa.Select[Any]
    one_key: sa.Select[Any]
    """The rows of one key (`key_value`): the second step."""
    one_key_column: dict[str, sa.Select[Any]]
    """One column of one key's rows: which column of an unreadable row the driver cannot read."""
    null_keys: sa.Select[Any]
    keyed: sa.Select[Any]
    """The rows of a list of keys (`keys`, expanding: one parameter each), whatever the mark."""


def _is_uuid(key_type: sa.types.TypeEngine[Any]) -> bool:
    return isinstance(key_type, sa.Uuid)


def page_queries(
    table: sa.Table,
    columns: Sequence[str],
    key_column: str,
    page_size: int,
    key_type: sa.types.TypeEngine[Any] | None = None,
    since_column: str | None = None,
) -> PageQueries:
    """Every query of a keyset read; `key_type` is the key column's real type (default: the model's);
    `since_column`: each also takes `since`, the mark that column must be at or past."""
    key = table.c[key_column]
    real_type = key_type if key_type is not None else key.type
    last_key = sa.bindparam("last_key", type_=real_type)

    def selected(name: str) -> sa.ColumnElement[Any]:
        column = table.c[name]
        if name == key_column:
            if _is_uuid(real_type):
                return sa.cast(key, sa.String(GUID_TEXT_LENGTH)).label(name)
            return sa.type_coerce(key, real_type).label(name)  # as the database holds it, no CAST
        if isinstance(column.type, sa.Boolean):
            return sa.type_coerce(column, sa.types.NullType()).label(name)  # no truthiness of text
        return column

    rows = since_scoped(sa.select(*map(selected, columns)), table, since_column)
    keys = since_scoped(sa.select(selected(key_column)), table, since_column)
    not_null = key.is_not(None)
    one_key = key == sa.bindparam("key_value", type_=real_type)

    def paged(select: sa.Select[Any], where: sa.ColumnElement[bool], limit: int = page_size) -> sa.Select[Any]:
        return select.where(where).order_by(key).limit(limit)

    # A page from the last key re-reads it: one row more keeps pages as large as batches.
    return PageQueries(
        first=paged(rows, not_null),
        from_key=paged(rows, key >= last_key, page_size + 1),
        after_key=paged(rows, key > last_key),
        keys_first=paged(keys, not_null),
        keys_from=paged(keys, key >= last_key, page_size + 1),
        keys_after=paged(keys, key > last_key),
        one_key=rows.where(one_key),
        one_key_column={
            name: since_scoped(sa.select(selected(name)), table, since_column).where(one_key) for name in columns
        },
        null_keys=row_count_query(table, since_column).where(key.is_(None)),
        keyed=sa.select(*map(selected, columns))
        .where(key.in_(sa.bindparam("keys", expanding=True, type_=real_type)))
        .order_by(key),
    )


def since_scoped(select: sa.Select[Any], table: sa.Table, since_column: str | None) -> sa.Select[Any]:
    """`select` limited to rows whose `since_column` is at or past the `since` bind, typed as the column;
    `select` itself when there is no such column."""
    if since_column is None:
        return select
    column = table.c[since_column]
    return select.where(column >= sa.bindparam("since", type_=column.type))


def real_key_type(conn: sa.Connection, table: sa.Table, key_column: str) -> sa.types.TypeEngine[Any]:
    """The key column's type as the database declares it (one reflection per entity run)."""
    for column in sa.inspect(conn).get_columns(table.name, schema=table.schema):
        if column["name"].lower() == key_column.lower():
            return column["type"]
    raise sa.exc.NoSuchColumnError(f"{table.fullname} has no column {key_column}")


def row_count_query(table: sa.Table, since_column: str | None = None) -> sa.Select[Any]:
    """Every row of the table (at or past the `since` mark, with a `since_column`), NULL keys and
    copies included: each is either sent or refused."""
    return since_scoped(sa.select(sa.func.count()).select_from(table), table, since_column)


def count_rows(engine: sa.Engine, table: sa.Table, since: SinceFilter | None = None) -> int:
    """How many rows the table holds now (changed since the mark, if given), by one `COUNT(*)` on a
    connection of its own."""
    query = row_count_query(table, since.column if since else None)
    try:
        with engine.connect() as conn:
            return int(conn.execute(query, since.params if since else {}).scalar_one())
    except sa.exc.SQLAlchemyError as exc:
        raise SourceUnavailable(f"cannot count {table.fullname}: {describe_db_error(exc)}") from exc


def cursor_ceiling(engine: sa.Engine, table: sa.Table, since_column: str) -> Any:
    """The highest value of the cursor column now (None if it holds none), by one `MAX` on a connection
    of its own: taken before a since read, it bounds the mark that read may move to."""
    query = sa.select(sa.func.max(table.c[since_column]))
    try:
        with engine.connect() as conn:
            return conn.execute(query).scalar_one()
    except sa.exc.SQLAlchemyError as exc:
        raise SourceUnavailable(
            f"cannot read the highest {table.fullname}.{since_column}: {describe_db_error(exc)}"
        ) from exc


def read_pages(
    engine: sa.Engine,
    table: sa.Table,
    columns: Sequence[str],
    key_column: str,
    page_size: int,
    since: SinceFilter | None = None,
) -> Iterator[SourcePage]:
    """Yield the table's rows (changed since the mark, if given) in key order, about `page_size` at a
    time, ending each read transaction.

    A row that repeats the previous page's last key is yielded (the caller reports the copy); the
    rows of that key already yielded are not yielded again.
    """
    key_index = list(columns).index(key_column)
    try:
        with engine.connect() as conn:
            key_type = real_key_type(conn, table, key_column)
            queries = page_queries(table, columns, key_column, page_size, key_type, since.column if since else None)
            scope = since.params if since else {}
            typed_key = uuid.UUID if _is_uuid(key_type) else _same
            reader = _PageReader(conn, queries, key_index, page_size, typed_key, scope)
            null_keys = int(conn.execute(queries.null_keys, scope).scalar_one())
            yield from reader.pages(null_keys)
    except sa.exc.SQLAlchemyError as exc:
        raise SourceUnavailable(f"cannot read {table.fullname}: {describe_db_error(exc)}") from exc
    except ValueError as exc:  # a key the driver cannot turn into a value: the page cannot even be reread
        raise SourceUnavailable(f"cannot read {table.fullname}.{key_column}: {type(exc).__name__}: {exc}") from exc


KEYS_PER_READ = 1000
"""Keys one read of queued records binds: one parameter each, under SQL Server's 2,100."""


def read_keys(
    engine: sa.Engine, table: sa.Table, columns: Sequence[str], key_column: str, entity_ids: Sequence[str]
) -> Iterator[SourcePage]:
    """The rows of these EntityIds (canonical text, matched in each form the key column may hold them),
    a page per chunk under `KEYS_PER_READ` bound values; a key the table no longer holds, or never could,
    is simply absent."""
    guid = isinstance(table.c[key_column].type, sa.Uuid)
    try:
        with engine.connect() as conn:
            key_type = real_key_type(conn, table, key_column)
            query = page_queries(table, columns, key_column, KEYS_PER_READ, key_type).keyed
            chunk: list[Any] = []
            for entity_id in entity_ids:
                forms = stored_forms(entity_id, key_type, guid)
                if len(chunk) + len(forms) > KEYS_PER_READ:
                    yield SourcePage([list(row) for row in conn.execute(query, {"keys": chunk})])
                    chunk = []
                chunk.extend(forms)
            if chunk:
                yield SourcePage([list(row) for row in conn.execute(query, {"keys": chunk})])
    except sa.exc.SQLAlchemyError as exc:
        raise SourceUnavailable(f"cannot read {table.fullname} by key: {describe_db_error(exc)}") from exc


def stored_forms(entity_id: str, key_type: sa.types.TypeEngine[Any], guid: bool) -> list[Any]:
    """The values a key column of `key_type` may hold a canonical EntityId as: a uuid for a uuid column, an
    int for an integer one; a GUID in a text column as text with or without hyphens, in either case (SQLite
    and MariaDB keep SQLAlchemy's Uuid as 32 hex digits); other text as it is; none for an id no row of
    the column could hold."""
    try:
        if _is_uuid(key_type):
            return [uuid.UUID(entity_id)]
        if isinstance(key_type, sa.Integer):
            return [int(entity_id)]
        if guid:
            value = uuid.UUID(entity_id)
            return list(dict.fromkeys([str(value), str(value).upper(), value.hex, value.hex.upper()]))
    except ValueError:
        return []  # not a value of the key's type: no row can hold it
    return [entity_id]


Entry = Sequence[Any] | UnreadableRow


class _PageReader:
    """The keyset loop over one connection, and the key-by-key reread of a page that fails."""

    def __init__(
        self,
        conn: sa.Connection,
        queries: PageQueries,
        key_index: int,
        page_size: int,
        typed_key: Callable[[Any], Any],
        scope: dict[str, Any],
    ) -> None:
        self._conn = conn
        self._scope = scope
        self._queries = queries
        self._key_index = key_index
        self._page_size = page_size
        self._typed_key = typed_key

    def _key(self, entry: Entry) -> Any:
        return entry.key if isinstance(entry, UnreadableRow) else entry[self._key_index]

    def pages(self, null_keys: int) -> Iterator[SourcePage]:
        last_key: Any = None
        inclusive = False
        already_yielded = 0  # rows of `last_key` yielded so far
        while True:
            entries, fetched, reread = self._fetch(last_key, inclusive)
            self._conn.rollback()
            skip = 0
            if inclusive:
                while skip < min(already_yielded, len(entries)) and self._key(entries[skip]) == last_key:
                    skip += 1
            if entries[skip:] or null_keys:
                yield _page(entries[skip:], null_keys, reread)
                null_keys = 0
            if fetched < self._page_size + (1 if inclusive else 0) or not entries:
                return
            new_last = self._key(entries[-1])
            run = 1
            while run < len(entries) and self._key(entries[-1 - run]) == new_last:
                run += 1
            # A key filling a whole page would be read again forever: move past it.
            inclusive = run < len(entries)
            already_yielded = run
            last_key = new_last

    def _fetch(self, last_key: Any, inclusive: bool) -> tuple[list[Entry], int, bool]:
        """The page's rows (and unreadable rows, in key order), how many the page query matched,
        and whether it had to be read again key by key."""
        queries = self._queries
        if last_key is None:
            query, keys_query, params = queries.first, queries.keys_first, self._scope
        else:
            query = queries.from_key if inclusive else queries.after_key
            keys_query = queries.keys_from if inclusive else queries.keys_after
            params = {**self._scope, "last_key": self._typed_key(last_key)}
        try:
            rows: list[Entry] = list(self._conn.execute(query, params).all())
            return rows, len(rows), False
        except (sa.exc.DBAPIError, ValueError) as exc:
            _raise_if_disconnected(exc)
            self._conn.rollback()
        keys = list(self._conn.execute(keys_query, params).scalars())
        self._conn.rollback()
        return self._read_one_by_one(keys), len(keys), True

    def _read_one_by_one(self, keys: Sequence[Any]) -> list[Entry]:
        entries: list[Entry] = []
        for key in dict.fromkeys(keys):  # each key once; a key's query returns all its copies
            try:
                params = {**self._scope, "key_value": self._typed_key(key)}
                entries.extend(self._conn.execute(self._queries.one_key, params).all())
            except (sa.exc.DBAPIError, ValueError) as exc:
                _raise_if_disconnected(exc)
                self._conn.rollback()
                entries.append(UnreadableRow(key, self._why_unreadable(key, exc)))
            self._conn.rollback()
        return entries

    def _why_unreadable(self, key: Any, error: sa.exc.DBAPIError | ValueError) -> str:
        """The driver's reason, naming the first column that cannot be read on its own."""
        for name, query in self._queries.one_key_column.items():
            try:
                self._conn.execute(query, {**self._scope, "key_value": self._typed_key(key)}).all()
            except (sa.exc.DBAPIError, ValueError) as exc:
                _raise_if_disconnected(exc)
                self._conn.rollback()
                return f"column {name}: {_describe(exc)}"
        return _describe(error)


def _raise_if_disconnected(exc: sa.exc.DBAPIError | ValueError) -> None:
    """A lost connection is no bad row: it stops the entity as SourceUnavailable."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        raise exc


def _describe(exc: sa.exc.DBAPIError | ValueError) -> str:
    return describe_db_error(exc) if isinstance(exc, sa.exc.DBAPIError) else f"{type(exc).__name__}: {exc}"


def _page(entries: Sequence[Entry], null_keys: int, reread: bool) -> SourcePage:
    if not reread:
        return SourcePage(entries, (), null_keys)  # type: ignore[arg-type]  # a page read whole holds only rows
    unreadable = [entry for entry in entries if isinstance(entry, UnreadableRow)]
    rows = [entry for entry in entries if not isinstance(entry, UnreadableRow)]
    return SourcePage(rows, unreadable, null_keys)


def _same(value: Any) -> Any:
    return value
