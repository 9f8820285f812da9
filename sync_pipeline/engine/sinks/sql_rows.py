"""What the SQL sinks share: records checked against the typed table, stored rows matched by the database
itself, and a batch that one bad record cannot sink.

Records come already mapped to the table's column names (dicts). A record is refused before any SQL
when a column is unknown or missing, a key or a NOT NULL column is NULL, or a text is longer than its
column; whatever the database still refuses (a unique, check or foreign key constraint) is isolated by
writing that batch again record by record, each in its own transaction. Matching incoming keys with
stored rows is done in SQL, so the database's own collation, padding and type conversions decide, as
they do for the write that follows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sync_pipeline.engine.columns import values_of
from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.sinks.sql_target import SqlTarget
from sync_pipeline.engine.state.tracking_sql import IDS_PER_ARRAY

MAX_PARAMETERS_PER_LOOKUP = 2000
"""Parameters in one lookup of stored rows: under SQL Server's 2,100."""
MAX_ROWS_PER_LOOKUP = 500
"""Incoming rows in one lookup, one `SELECT … UNION ALL` each: SQLite allows 500 terms in a compound select."""

Key = tuple[Any, ...]
"""A record's key values, in the order of the sink's key columns."""

_COLUMN_IN_MESSAGE = (
    re.compile(r"for column [`'\"]?(\w+)"),  # MariaDB: Data too long / Incorrect value for column 'x'
    re.compile(r"[Cc]olumn [`'\"](\w+)[`'\"] cannot be null"),  # MariaDB NOT NULL
    re.compile(r"constraint failed: \w+\.(\w+)"),  # SQLite: NOT NULL / UNIQUE constraint failed: t.col
)
_CONSTRAINT_IN_MESSAGE = (
    re.compile(r"CONSTRAINT [`'\"]?(\w+)[`'\"]? failed"),  # MariaDB CHECK
    re.compile(r"CHECK constraint failed: (\w+)"),  # SQLite
)


_TEXT_OR_NULL = frozenset({str, type(None)})


class SqlSinkUnavailable(Exception):
    """The target database could not be read or written: the batch was not written, the caller stops."""


@dataclass(frozen=True)
class RefusedRecord:
    """One record that was not written, by its key, with the column at fault (when known) and why."""

    key: Key
    column: str | None
    reason: str


class TableColumns:
    """The typed table a sink writes, its key columns and the columns it writes, checked once."""

    def __init__(self, table: sa.Table, key_columns: Sequence[str], columns: Sequence[str]) -> None:
        for argument, names in (("key_columns", key_columns), ("columns", columns)):
            unknown = [name for name in names if name not in table.c]
            if unknown or not names:
                problem = f"{', '.join(unknown)} not in {table.name}" if unknown else "none given"
                raise ValueError(f"{argument}: {problem} (its columns: {', '.join(table.c.keys())})")
        self.table = table
        self.keys = [table.c[name] for name in key_columns]
        self.written = [table.c[name] for name in dict.fromkeys([*key_columns, *columns])]
        self.key_names = frozenset(key_columns)
        self.updated = [column for column in self.written if column.name not in self.key_names]
        """The written columns but the key: what an update sets."""
        self._key_order = tuple(key_columns)
        self._written_names = tuple(column.name for column in self.written)
        self._table_names = frozenset(table.c.keys())
        self._checks = [
            (column.name, column.name in self.key_names, column.nullable, getattr(column.type, "length", None))
            for column in self.written
        ]
        """Per written column what `refusal` checks, read off the table once rather than per record."""

    def key_of(self, record: Mapping[str, Any]) -> Key:
        """The record's key values (None where one is missing)."""
        return tuple(map(record.get, self._key_order))

    def keys_of(self, records: Sequence[Mapping[str, Any]]) -> list[Key]:
        """Each record's `key_of`, a column at a time: a batch's keys without a Python call per record."""
        return list(zip(*(values_of(records, name) for name in self._key_order), strict=True))

    def all_writable(self, records: Sequence[Mapping[str, Any]], not_null: Mapping[str, str] | None = None) -> bool:
        """Whether `refusal` finds nothing in any of the records, checked a column at a time (a few passes
        in C over a batch, not a loop per record); False also when it cannot tell so cheaply (a record with
        other columns, a text column holding other values), and the caller asks `refusal` record by record."""
        if records and set(map(len, records)) != {len(self._written_names)}:  # a column not written, or one missing
            return False
        for name, is_key, nullable, length in self._checks:
            try:
                values = list(map(itemgetter(name), records))
            except KeyError:
                return False
            if None in values and (is_key or not nullable or (not_null is not None and name in not_null)):
                return False
            if length is not None:
                if not set(map(type, values)) <= _TEXT_OR_NULL:
                    return False
                if max(map(len, filter(None, values)), default=0) > length:
                    return False
        return True

    def refusal(self, record: Mapping[str, Any], not_null: Mapping[str, str] | None = None) -> RefusedRecord | None:
        """Why the record cannot be written as it is, or None: checked here so the column can be named.

        `not_null` adds columns a sink needs filled, each with the reason (e.g. the timestamp to order by).
        """
        if not self._table_names.issuperset(record):
            unknown = next(name for name in record if name not in self._table_names)
            return RefusedRecord(self.key_of(record), unknown, f"not a column of {self.table.name}")
        for name, is_key, nullable, length in self._checks:
            if name not in record:
                return RefusedRecord(self.key_of(record), name, "missing from the record")
            value = record[name]
            if value is None:
                if is_key:
                    return RefusedRecord(self.key_of(record), name, "NULL in a key column")
                if not_null and name in not_null:
                    return RefusedRecord(self.key_of(record), name, not_null[name])
                if not nullable:
                    return RefusedRecord(self.key_of(record), name, "NULL in a NOT NULL column")
            elif length is not None and isinstance(value, str) and len(value) > length:
                return RefusedRecord(self.key_of(record), name, f"{len(value)} characters, the column holds {length}")
        return None

    def row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The written columns' values of a record (its other table columns are left alone)."""
        return {name: record[name] for name in self._written_names}


@dataclass(frozen=True)
class StoredRow:
    """What the table holds for one incoming row: whether the incoming one is newer (always True without
    a timestamp column) and the stored values of the columns asked for."""

    newer: bool
    values: dict[str, Any]


class StoredRows:
    """Which incoming rows the table holds, matched in SQL: with a timestamp column, also whether each
    incoming timestamp is newer than the stored one (or the stored one is NULL); with `fetched`, the
    stored values of those columns.

    The incoming keys travel as a derived table joined to the table: on PostgreSQL one array parameter
    per column, unnested WITH ORDINALITY (a whole batch in one statement of a few parameters); elsewhere
    `SELECT <offset>, :key… UNION ALL …`, in chunks under SQL Server's 2,100 parameters and SQLite's 500
    compound terms. The statement of each chunk length is built once, so SQLAlchemy compiles it once.
    """

    def __init__(
        self,
        dialect_name: str,
        columns: TableColumns,
        timestamp: sa.Column[Any] | None = None,
        fetched: Sequence[str] = (),
    ) -> None:
        self._columns = columns
        self._timestamp = timestamp
        self._fetched = [columns.table.c[name] for name in fetched]
        self._compared = [*columns.keys, *([timestamp] if timestamp is not None else [])]
        self._as_arrays = dialect_name == "postgresql"
        self.rows_per_lookup = (
            IDS_PER_ARRAY
            if self._as_arrays
            else min(MAX_ROWS_PER_LOOKUP, MAX_PARAMETERS_PER_LOOKUP // len(self._compared))
        )
        self._lookups: dict[int, sa.Select[Any]] = {}

    def matches(self, target: SqlTarget, rows: Sequence[Mapping[str, Any]]) -> dict[int, StoredRow]:
        """Position in `rows` -> what the table holds for it, for each row whose key the table holds; a
        database error raises `SqlSinkUnavailable`."""
        found: dict[int, StoredRow] = {}
        names = [column.name for column in self._fetched]
        try:
            with target.connect() as conn:
                for start in range(0, len(rows), self.rows_per_lookup):
                    chunk = rows[start : start + self.rows_per_lookup]
                    for offset, is_newer, *values in conn.execute(self._lookup(len(chunk)), self._parameters(chunk)):
                        found[start + int(offset)] = StoredRow(bool(is_newer), dict(zip(names, values, strict=True)))
        except sa.exc.SQLAlchemyError as exc:
            raise SqlSinkUnavailable(f"cannot read {self._columns.table.name}: {describe_db_error(exc)}") from exc
        return found

    def _parameters(self, chunk: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if self._as_arrays:
            return {f"in_{n}": [row[column.name] for row in chunk] for n, column in enumerate(self._compared)}
        return {
            f"r{offset}_{n}": row[column.name]
            for offset, row in enumerate(chunk)
            for n, column in enumerate(self._compared)
        }

    def _lookup(self, length: int) -> sa.Select[Any]:
        if self._as_arrays:
            length = self.rows_per_lookup  # one statement, whatever the length
        if length not in self._lookups:
            incoming, row_offset = self._incoming(length)
            keys = self._columns.keys
            matched = sa.and_(*(column == incoming.c[f"in_{n}"] for n, column in enumerate(keys)))
            newer: sa.ColumnElement[Any] = sa.literal_column("1")
            if self._timestamp is not None:
                is_newer = sa.or_(self._timestamp.is_(None), incoming.c[f"in_{len(keys)}"] > self._timestamp)
                newer = sa.case((is_newer, sa.literal_column("1")), else_=sa.literal_column("0"))
            query = sa.select(row_offset, newer.label("newer"), *self._fetched)
            self._lookups[length] = query.join_from(incoming, self._columns.table, matched)
        return self._lookups[length]

    def _incoming(self, length: int) -> tuple[sa.FromClause, sa.ColumnElement[Any]]:
        """The incoming rows as a derived table of columns in_0…in_N, and each row's offset in the chunk."""
        names = [f"in_{n}" for n in range(len(self._compared))]
        if self._as_arrays:
            arrays = [
                sa.bindparam(name, type_=postgresql.ARRAY(column.type))
                for name, column in zip(names, self._compared, strict=True)
            ]
            unnested = sa.func.unnest(*arrays).table_valued(*names, with_ordinality="ordinality")
            incoming = unnested.render_derived(name="incoming")
            return incoming, incoming.c.ordinality - sa.literal_column("1", sa.Integer)
        rows = sa.union_all(
            *(
                sa.select(
                    sa.literal_column(str(offset), sa.Integer).label("row_offset"),
                    *(
                        sa.bindparam(f"r{offset}_{n}", type_=column.type).label(name)
                        for n, (name, column) in enumerate(zip(names, self._compared, strict=True))
                    ),
                )
                for offset in range(length)
            )
        ).subquery("incoming")
        return rows, rows.c.row_offset


def write_isolating_refusals(
    target: SqlTarget,
    table: sa.Table,
    work: Callable[[sa.Connection, Sequence[int]], None],
    positions: Sequence[int],
    key_at: Callable[[int], Key],
) -> dict[int, RefusedRecord]:
    """Run `work` for `positions` in one transaction; if the database refuses a record (`is_refusal`), run
    it again for each position alone, and return the positions refused, each with its reason.

    Any other database error raises `SqlSinkUnavailable` naming the table, without SQL or parameters.
    """
    if not positions:
        return {}
    try:
        with target.begin() as conn:
            work(conn, positions)
        return {}
    except sa.exc.SQLAlchemyError as exc:
        if not is_refusal(exc):
            raise SqlSinkUnavailable(f"cannot write {table.name}: {describe_db_error(exc)}") from exc
    refused = {}
    for position in positions:  # one record at a time, so only the bad ones stay out
        try:
            with target.begin() as conn:
                work(conn, [position])
        except sa.exc.SQLAlchemyError as exc:
            if not is_refusal(exc):
                raise SqlSinkUnavailable(f"cannot write {table.name}: {describe_db_error(exc)}") from exc
            refused[position] = RefusedRecord(key_at(position), failed_column(exc, table), describe_db_error(exc))
    return refused


def is_refusal(exc: sa.exc.SQLAlchemyError) -> bool:
    """Whether the database refused the data (a constraint, a value it cannot store, two records it takes
    for one key in one statement), not the statement or the connection: SQLAlchemy's IntegrityError or
    DataError, or SQLSTATE class 21, 22 or 23 whatever the driver called it (pymysql raises a failed CHECK,
    SQLSTATE 23000, as OperationalError; psycopg an ON CONFLICT meeting one row twice, 21000, as
    ProgrammingError). Written one record at a time, such records go in, or are refused, alone."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return True
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or next(iter(getattr(orig, "args", ())), None)  # pyodbc: args[0]
    return isinstance(sqlstate, str) and sqlstate[:2] in ("21", "22", "23")


def failed_column(exc: sa.exc.SQLAlchemyError, table: sa.Table) -> str | None:
    """The column a constraint error is about: named by the driver, or the one its named constraint is on."""
    orig = getattr(exc, "orig", None)
    diag = getattr(orig, "diag", None)  # psycopg's diagnostics
    column_name = getattr(diag, "column_name", None)
    if column_name:
        return str(column_name)
    message = str(orig)
    for pattern in _COLUMN_IN_MESSAGE:
        found = pattern.search(message)
        if found:
            return found.group(1)
    constraint = getattr(diag, "constraint_name", None) or next(
        (found.group(1) for pattern in _CONSTRAINT_IN_MESSAGE if (found := pattern.search(message))), None
    )
    return _constrained_columns(table, constraint) if constraint else None


def _constrained_columns(table: sa.Table, constraint_name: str) -> str | None:
    """The columns of the table's constraint of that name (a CHECK's: those its expression names)."""
    for constraint in table.constraints:
        if constraint.name == constraint_name and isinstance(constraint, sa.schema.ColumnCollectionConstraint):
            return ", ".join(constraint.columns.keys()) or None
    return None
