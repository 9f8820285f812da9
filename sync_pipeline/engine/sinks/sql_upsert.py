"""Records into a table on a key, last write wins on a timestamp column: new keys inserted, a stored row
updated only by a newer record.

On PostgreSQL a batch is one statement, `INSERT … SELECT … FROM json_to_recordset(<the rows as one JSON text>)
ON CONFLICT (key) DO UPDATE … WHERE t.ts IS NULL OR excluded.ts > t.ts RETURNING (xmax = 0)` (or from
`unnest(<one array per column>)` for values JSON cannot carry exactly), its returned flags counted
by the database (a data-modifying WITH): each flag tells a row inserted (a new row version no transaction
has locked) from one updated (the version ON CONFLICT locked first), so the counts are exact without
reading the stored rows first, even while someone else writes the same keys, and one row comes back.

Elsewhere, and on PostgreSQL when the sink keeps history or reads details (both need the stored values
first) or when the database refused a record of the batch, the stored rows its keys match are read first,
with the timestamps compared in SQL (`sql_rows.StoredRows`): that gives exact counts on every backend
without relying on each driver's rowcount (MariaDB counts 2 per update). Then the new and newer records
are written in one transaction, by one upsert per dialect that compares again itself:

- SQL Server: `MERGE … WITH (HOLDLOCK) … WHEN MATCHED AND (target.ts IS NULL OR source.ts > target.ts)`,
  one row per execution (pyodbc `fast_executemany` sends them as one array);
- PostgreSQL: the statement above, for the rows to write; SQLite: `INSERT … ON CONFLICT (key) DO UPDATE …
  WHERE t.ts IS NULL OR excluded.ts > t.ts`, one row per execution;
- MariaDB: `INSERT … ON DUPLICATE KEY UPDATE col = CASE WHEN <newer> THEN VALUES(col) ELSE col END`, the
  timestamp column assigned last, as MariaDB assigns left to right and later columns would compare with
  the timestamp just written.

A stored NULL timestamp is overwritten; an incoming NULL one is refused (it cannot be ordered). A key twice
in one batch: its newest record is written, the others count as skipped. Where the stored rows are read
first, the counts are exact as long as nobody else writes the same keys during the batch; last write wins
holds either way. On MariaDB a record conflicting on another unique key of the table updates that row (ON
DUPLICATE KEY matches any unique key): give it tables whose only unique key is the sink's key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter, itemgetter
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mssql, mysql, postgresql, sqlite

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.sinks.record_details import DETAIL_FAILED, DETAIL_OK, DetailFetcher
from sync_pipeline.engine.sinks.sql_rows import (
    Key,
    RefusedRecord,
    SqlSinkUnavailable,
    StoredRows,
    TableColumns,
    is_refusal,
    write_isolating_refusals,
)
from sync_pipeline.engine.sinks.sql_target import SqlTarget
from sync_pipeline.engine.sinks.sql_update import update_parameters, update_statement
from sync_pipeline.engine.state.tracking_sql import IDS_PER_ARRAY


@dataclass(frozen=True)
class RowChange:
    """A stored row the upsert changed, by key: the old and new values of the columns that changed (the
    timestamp always; a detail column as the hash of its JSON)."""

    key: Key
    old: dict[str, Any]
    new: dict[str, Any]


@dataclass(frozen=True)
class Conflict:
    """An incoming record left unapplied although it differs from the stored row: it is as old as the
    stored row, or older. Kept for someone to review, with the differing values of both."""

    key: Key
    reason: str
    stored: dict[str, Any]
    incoming: dict[str, Any]


@dataclass
class UpsertCounts:
    """What one `write` did: rows inserted, rows updated, records skipped as older or equal, records refused;
    with history, the changes made and the conflicts met; with details, how many GETs of them failed."""

    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    refused: list[RefusedRecord] = field(default_factory=list)
    changes: list[RowChange] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    details_fetched: int = 0
    details_failed: int = 0


class SqlUpsertSink:
    """Upserts records (dicts keyed by the table's column names) on `key_columns`, last write wins by
    `timestamp_column`; `columns` are the ones written (default: every column of the table).

    With `history`, each update is returned as a `RowChange` and each record as old as or older than its
    stored row but different as a `Conflict`. With `details`, the rows written (and the stored rows
    whose detail failed before) get their detail fetched first."""

    def __init__(
        self,
        target: SqlTarget,
        table: sa.Table,
        key_columns: Sequence[str],
        timestamp_column: str,
        columns: Sequence[str] | None = None,
        history: bool = False,
        details: DetailFetcher | None = None,
    ) -> None:
        if timestamp_column not in table.c or timestamp_column in key_columns:
            raise ValueError(f"timestamp_column: {timestamp_column!r} is not a non-key column of {table.name}")
        if not _is_unique_key(table, set(key_columns)):
            raise ValueError(
                f"key_columns: {', '.join(key_columns)} are not the primary key or a unique constraint of "
                f"{table.name}: an upsert needs one to find the stored row"
            )
        self.target = target
        self.table = table
        self.key_columns = tuple(key_columns)
        detail_columns = details.details.columns if details else ()
        written = list(table.c.keys()) if columns is None else [*columns, *detail_columns, timestamp_column]
        self._columns = TableColumns(table, key_columns, written)
        self._timestamp = table.c[timestamp_column]
        self._not_null = {timestamp_column: "NULL timestamp: last write wins cannot order it"}
        self._upsert = upsert_statement(target.dialect.name, self._columns, self._timestamp)
        self._counting = self._upsert if isinstance(self._upsert, ArrayUpsert) and not history and not details else None
        """The upsert that counts what it writes, when nothing else needs the stored rows: no lookup first."""
        self._history = history
        self._compared = [c.name for c in self._columns.updated if c.name not in (timestamp_column, *detail_columns)]
        """The content that decides a conflict: what is written but the key, the timestamp and the details."""
        fetched = [*self._compared, timestamp_column] if history else []
        self.details = details
        if details is not None:
            fetched.append(details.details.status_column)
            filled = TableColumns(table, key_columns, detail_columns)
            self._fill = update_statement(filled)
            self._fill_parameters: Callable[[Mapping[str, Any]], dict[str, Any]] = partial(update_parameters, filled)
            self._stored_details = StoredRows(target.dialect.name, self._columns, fetched=[details.details.column])
            column, status, error = details.details.columns
            self._detail_placeholders: dict[str, Any] = {column: None, status: DETAIL_FAILED, error: None}
        self._stored = StoredRows(target.dialect.name, self._columns, self._timestamp, fetched)

    def key_of(self, record: Mapping[str, Any]) -> Key:
        """A record's key values, as refusals and unmatched records are reported by."""
        return self._columns.key_of(record)

    def keys_of(self, records: Sequence[Mapping[str, Any]]) -> list[Key]:
        """Each record's `key_of`, in order."""
        return self._columns.keys_of(records)

    def write(self, records: Sequence[Mapping[str, Any]]) -> UpsertCounts:
        """Upsert a batch; a refused record is reported by key, column and reason, and the others are written.

        Any other database error raises `SqlSinkUnavailable`; writing the batch again is harmless."""
        counts = UpsertCounts()
        chosen = self._candidates(records, counts)
        if self._counting is not None and self._write_at_once(self._counting, chosen, counts):
            return counts
        self._write_after_lookup([self._columns.row(record) for record in chosen], counts)  # details fill them in
        return counts

    def _candidates(self, records: Sequence[Mapping[str, Any]], counts: UpsertCounts) -> list[Mapping[str, Any]]:
        """Each key's newest record (all written columns there, checked); the refused and the older copies
        counted."""
        candidates: dict[Any, int] = {}  # key -> position of its newest record in `records`
        if self.details is not None:  # filled by the fetch: checked as if it had failed
            records = [{**self._detail_placeholders, **record} for record in records]
        if self._columns.all_writable(records, self._not_null):  # the usual batch: nothing refused
            keys = self._columns.keys_of(records)
            if len(set(keys)) == len(keys):  # and no key twice: every record is its key's newest
                return list(records)
        for position, record in enumerate(records):
            refusal = self._columns.refusal(record, self._not_null)
            if refusal is not None:
                counts.refused.append(refusal)
                continue
            key = self._columns.key_of(record)
            kept = candidates.get(key)
            if kept is not None and records[kept][self._timestamp.name] >= record[self._timestamp.name]:
                counts.skipped += 1
                continue
            counts.skipped += kept is not None
            candidates[key] = position
        return [records[position] for position in candidates.values()]

    def _write_at_once(self, upsert: ArrayUpsert, rows: Sequence[Mapping[str, Any]], counts: UpsertCounts) -> bool:
        """Write the rows (their written columns) by the one statement that counts them; False, nothing
        written, if the database refused one of them: the caller writes the batch again the way that
        isolates it."""
        try:
            with self.target.begin() as conn:
                written = upsert.execute(conn, rows)
        except sa.exc.SQLAlchemyError as exc:
            if is_refusal(exc):
                return False
            raise SqlSinkUnavailable(f"cannot write {self.table.name}: {describe_db_error(exc)}") from exc
        counts.inserted, counts.updated = written.inserted, written.updated
        counts.skipped += len(rows) - written.inserted - written.updated
        return True

    def _write_after_lookup(self, rows: list[dict[str, Any]], counts: UpsertCounts) -> None:
        """Read the stored rows first (their values, for history and details), write the new and newer
        rows, and isolate a record the database refuses."""
        stored = self._stored.matches(self.target, rows)
        to_write = [n for n in range(len(rows)) if n not in stored or stored[n].newer]
        counts.skipped += len(rows) - len(to_write)
        refetched: list[int] = []  # unchanged rows whose detail failed last time
        for n, found in stored.items():
            if found.newer:
                continue
            if self._history and (conflict := self._conflict(rows[n], found.values)) is not None:
                counts.conflicts.append(conflict)
            if self.details is not None and found.values[self.details.details.status_column] != DETAIL_OK:
                refetched.append(n)
        if self.details is not None:
            fetched = [rows[n] for n in (*to_write, *refetched)]
            counts.details_fetched = len(fetched)
            counts.details_failed = self.details.fill(fetched)
        refetching = set(refetched)

        def upsert(conn: sa.Connection, chosen: Sequence[int]) -> None:
            self._upsert.execute(conn, [rows[n] for n in chosen if n not in refetching])
            filled = [self._fill_parameters(rows[n]) for n in chosen if n in refetching]
            if filled:
                conn.execute(self._fill, filled)

        old_details = self._old_details([n for n in to_write if n in stored], rows)
        refused = write_isolating_refusals(
            self.target, self.table, upsert, [*to_write, *refetched], lambda n: self._columns.key_of(rows[n])
        )
        counts.refused.extend(refused.values())
        for n in to_write:
            if n in refused:
                continue
            if n not in stored:
                counts.inserted += 1
                continue
            counts.updated += 1
            if self._history:
                counts.changes.append(self._change(rows[n], stored[n].values, old_details.get(n)))

    def _conflict(self, row: Mapping[str, Any], stored: Mapping[str, Any]) -> Conflict | None:
        """The conflict an incoming row not newer than its stored one makes, if its content differs."""
        differing = [name for name in self._compared if not _same(row[name], stored[name])]
        if not differing:
            return None
        ts = self._timestamp.name
        as_old = _same(row[ts], stored[ts])
        reason = f"{ts} {'equal to' if as_old else 'older than'} the stored row's, content differs"
        return Conflict(
            self._columns.key_of(row),
            reason,
            {name: stored[name] for name in (*differing, ts)},
            {name: row[name] for name in (*differing, ts)},
        )

    def _change(self, row: Mapping[str, Any], stored: Mapping[str, Any], old_detail: str | None) -> RowChange:
        """What an update changed: the differing columns, the timestamp, and the detail's hash if it changed."""
        ts = self._timestamp.name
        changed = [name for name in self._compared if not _same(row[name], stored[name])]
        old = {name: stored[name] for name in (*changed, ts)}
        new = {name: row[name] for name in (*changed, ts)}
        if self.details is not None:
            column = self.details.details.column
            new_detail = detail_hash(row[column])
            if new_detail != old_detail:
                old[column], new[column] = old_detail, new_detail
        return RowChange(self._columns.key_of(row), old, new)

    def _old_details(self, positions: Sequence[int], rows: Sequence[Mapping[str, Any]]) -> dict[int, str | None]:
        """The stored detail's hash of each row about to be updated (with history and details only)."""
        if not self._history or self.details is None or not positions:
            return {}
        column = self.details.details.column
        found = self._stored_details.matches(self.target, [rows[n] for n in positions])
        return {positions[n]: detail_hash(stored.values[column]) for n, stored in found.items()}


def detail_hash(value: Any) -> str | None:
    """A detail (JSON text or a parsed value) as `sha256:<hex>` of its canonical JSON text; None for none."""
    if value is None:
        return None
    parsed = json.loads(value) if isinstance(value, str) else value
    text = json.dumps(parsed, separators=(",", ":"), sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _same(incoming: Any, stored: Any) -> bool:
    """Whether an incoming value equals the stored one as the database gave it back (a driver may return a
    Decimal for an int, text for a number)."""
    return bool(incoming == stored) or (incoming is not None and stored is not None and str(incoming) == str(stored))


@dataclass(frozen=True)
class WrittenRows:
    """What an upsert that counts wrote: rows inserted and rows updated (the others were not newer)."""

    inserted: int
    updated: int


@dataclass(frozen=True)
class UpsertStatement:
    """A dialect's upsert of one row, executed for each (an executemany), and how a row's values become its
    parameters; it cannot tell what it wrote."""

    statement: sa.Executable
    parameters: Callable[[Mapping[str, Any]], dict[str, Any]]

    def execute(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write the rows, one execution each."""
        if rows:
            conn.execute(self.statement, [self.parameters(row) for row in rows])


@dataclass(frozen=True)
class ArrayUpsert:
    """PostgreSQL's upsert of many rows in one statement, and one row back: how many rows it inserted and how
    many it wrote. The rows travel as one JSON text (`rows`, orjson's work in C, read by `json_to_recordset`)
    when JSON carries each of their values exactly; otherwise as one array parameter per written column,
    `c0`…`cN` (psycopg builds those element by element in Python: 3.5 times the CPU)."""

    statement: sa.Select[int, int]
    recordset: sa.Select[int, int]
    names: Sequence[str]
    exact: Sequence[tuple[str, frozenset[type], bool]]
    """Per written column: the value types JSON text carries to it unchanged, and whether its timestamps
    must be naive (an aware one is converted on the way in by the arrays only)."""

    def execute(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> WrittenRows:
        """Write the rows' written columns (a row may hold others), up to `IDS_PER_ARRAY` rows per statement
        (a batch is one); count what was written."""
        inserted = written = 0
        for start in range(0, len(rows), IDS_PER_ARRAY):
            chunk = rows[start : start + IDS_PER_ARRAY]
            columns = {name: list(map(itemgetter(name), chunk)) for name in self.names}
            as_json = self._as_json(chunk, columns)
            if as_json is not None:
                result = conn.execute(self.recordset, {"rows": as_json})
            else:
                result = conn.execute(self.statement, {f"c{n}": columns[name] for n, name in enumerate(self.names)})
            chunk_inserted, chunk_written = result.one()
            inserted += chunk_inserted
            written += chunk_written
        return WrittenRows(inserted, written - inserted)

    def _as_json(self, chunk: Sequence[Mapping[str, Any]], columns: Mapping[str, list[Any]]) -> str | None:
        """The rows' written columns as a JSON array of objects, or None if some value would not come out of
        it as the arrays bring it in (a float, whose NaN JSON has not; a Decimal; a bool for a number; an
        aware timestamp for a naive column; an integer past 64 bits)."""
        for name, types, naive in self.exact:
            values = columns[name]
            if not set(map(type, values)) <= types:
                return None
            if naive and any(map(attrgetter("tzinfo"), filter(None, values))):
                return None
        try:
            if set(map(len, chunk)) == {len(self.names)}:  # the rows hold the written columns only: as they are
                with contextlib.suppress(TypeError):  # a key a str subclass: the rows rebuilt below
                    return orjson.dumps(chunk).decode()
            return orjson.dumps(
                [dict(zip(self.names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
            ).decode()
        except TypeError:  # an integer past 64 bits, a lone surrogate: the arrays bring it, or refuse it
            return None


def upsert_statement(
    dialect_name: str, columns: TableColumns, timestamp: sa.Column[Any]
) -> UpsertStatement | ArrayUpsert:
    """The last-write-wins upsert of the written columns for `dialect_name`: on PostgreSQL one statement
    per batch, elsewhere one execution per row."""
    table = columns.table
    if dialect_name == "postgresql":
        return _postgresql_array_upsert(columns, timestamp)
    if dialect_name == "sqlite":
        on_conflict = sqlite.insert(table)
        statement: sa.Executable = on_conflict.on_conflict_do_update(
            index_elements=columns.keys,
            set_={column.name: on_conflict.excluded[column.name] for column in columns.updated},
            where=sa.or_(timestamp.is_(None), on_conflict.excluded[timestamp.name] > timestamp),
        )
        return UpsertStatement(statement, dict)
    if dialect_name in ("mysql", "mariadb"):
        insert = mysql.insert(table)
        newer = sa.or_(timestamp.is_(None), insert.inserted[timestamp.name] > timestamp)
        last = sorted(columns.updated, key=lambda column: column is timestamp)  # the timestamp assigned last
        assignments = [(column.name, sa.case((newer, insert.inserted[column.name]), else_=column)) for column in last]
        return UpsertStatement(insert.on_duplicate_key_update(assignments), dict)
    if dialect_name == "mssql":
        return _mssql_merge(columns, timestamp)
    raise ValueError(f"no SQL upsert for the {dialect_name} dialect (known: mssql, postgresql, sqlite, mysql, mariadb)")


def _postgresql_array_upsert(columns: TableColumns, timestamp: sa.Column[Any]) -> ArrayUpsert:
    """`WITH written AS (INSERT … SELECT … FROM json_to_recordset(:rows) AS incoming(col type, …) ON CONFLICT
    (key) DO UPDATE … WHERE <newer> RETURNING (xmax = 0)) SELECT count(*) FILTER (WHERE inserted), count(*) FROM
    written`, and the same from `unnest(:c0::type[], …)`: a row inserted by the statement has no locker yet
    (xmax 0); one it updated carries the lock ON CONFLICT took first (xmax its transaction). Counted in the
    database, the flags of a batch cost one row back, not one per row. Texts travel as text, not varchar(n): a
    cast to varchar(n) would cut a long value silently, where the column itself refuses it."""
    names = [str(column.name) for column in columns.written]  # plain str: orjson takes no subclass for a key
    arrays = [
        sa.bindparam(f"c{n}", type_=postgresql.ARRAY(_unbounded(column.type)))
        for n, column in enumerate(columns.written)
    ]
    incoming = sa.func.unnest(*arrays).table_valued(*names).render_derived(name="incoming")
    recordset = sa.func.json_to_recordset(sa.cast(sa.bindparam("rows", type_=sa.Text), postgresql.JSON))
    incoming_rows = recordset.table_valued(
        *(sa.column(column.name, _unbounded(column.type)) for column in columns.written)
    ).render_derived(name="incoming", with_types=True)
    return ArrayUpsert(
        _counted(_upsert_from(columns, timestamp, sa.select(*incoming.c))),
        _counted(_upsert_from(columns, timestamp, sa.select(*incoming_rows.c))),
        names,
        [(column.name, *_json_exact(column)) for column in columns.written],
    )


def _upsert_from(columns: TableColumns, timestamp: sa.Column[Any], incoming: sa.Select[Any]) -> sa.Insert:
    """`INSERT … <incoming> ON CONFLICT (key) DO UPDATE … WHERE <newer> RETURNING (xmax = 0)`."""
    insert = postgresql.insert(columns.table).from_select([column.name for column in columns.written], incoming)
    return insert.on_conflict_do_update(
        index_elements=columns.keys,
        set_={column.name: insert.excluded[column.name] for column in columns.updated},
        where=sa.or_(timestamp.is_(None), insert.excluded[timestamp.name] > timestamp),
    ).returning(sa.literal_column("xmax = 0", sa.Boolean).label("inserted"))


def _counted(upsert: sa.Insert) -> sa.Select[int, int]:
    """The upsert in a WITH, its rows counted: those inserted, and all it wrote."""
    written = upsert.cte("written")
    return sa.select(sa.func.count().filter(written.c.inserted), sa.func.count()).select_from(written)


_JSON_EXACT: dict[type, frozenset[type]] = {
    str: frozenset({str}),
    int: frozenset({int}),
    bool: frozenset({bool}),
    dt.datetime: frozenset({dt.datetime}),
    dt.date: frozenset({dt.date}),
    uuid.UUID: frozenset({uuid.UUID}),
}
"""Per column Python type, the value types orjson writes as text PostgreSQL reads back to the same value
(by exact type: a bool is no int, a datetime no date)."""


def _json_exact(column: sa.Column[Any]) -> tuple[frozenset[type], bool]:
    """The value types JSON carries to the column exactly (none for a type not listed: the arrays carry
    its values), and whether they must be naive timestamps."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = object
    types = _JSON_EXACT.get(python_type, frozenset()) | {type(None)}
    naive = python_type is dt.datetime and not getattr(column.type, "timezone", False)
    return types, naive


def _unbounded(column_type: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    """A column's type as its array parameter is cast: text of a given length as unbounded text."""
    if isinstance(column_type, sa.String) and not isinstance(column_type, sa.Enum) and column_type.length is not None:
        return sa.Text()
    return column_type


def _mssql_merge(columns: TableColumns, timestamp: sa.Column[Any]) -> UpsertStatement:
    """SQL Server's MERGE of one row, its values as typed parameters p0…pN; HOLDLOCK keeps two MERGEs of
    one new key from both inserting it."""
    preparer = mssql.dialect().identifier_preparer
    quote = preparer.quote
    table = preparer.format_table(columns.table)
    names = [quote(column.name) for column in columns.written]
    binds = ", ".join(f":p{n}" for n in range(len(names)))
    on = " AND ".join(f"target.{quote(column.name)} = source.{quote(column.name)}" for column in columns.keys)
    ts = quote(timestamp.name)
    sets = ", ".join(f"{quote(column.name)} = source.{quote(column.name)}" for column in columns.updated)
    merge = sa.text(
        f"MERGE INTO {table} WITH (HOLDLOCK) AS target "
        f"USING (VALUES ({binds})) AS source ({', '.join(names)}) ON {on} "
        f"WHEN MATCHED AND (target.{ts} IS NULL OR source.{ts} > target.{ts}) THEN UPDATE SET {sets} "
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({', '.join(f'source.{n}' for n in names)});"
    ).bindparams(*(sa.bindparam(f"p{n}", type_=column.type) for n, column in enumerate(columns.written)))
    written = [column.name for column in columns.written]
    return UpsertStatement(merge, lambda row: {f"p{n}": row[name] for n, name in enumerate(written)})


def _is_unique_key(table: sa.Table, key_columns: set[str]) -> bool:
    """Whether the columns are the table's primary key, a unique constraint or a unique index."""
    uniques = [{column.name for column in table.primary_key.columns}]
    uniques += [
        {column.name for column in constraint.columns}
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    uniques += [{column.name for column in index.columns} for index in table.indexes if index.unique]
    uniques += [{column.name} for column in table.columns if column.unique]
    return key_columns in uniques
