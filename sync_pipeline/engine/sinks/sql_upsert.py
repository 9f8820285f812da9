"""Records into a table on a key, last write wins on a timestamp column: new keys inserted, a stored row
updated only by a newer record.

For each batch the stored rows its keys match are read first, with the timestamps compared in SQL
(`sql_rows.StoredRows`): that gives exact counts on every backend without relying on each driver's
rowcount (MariaDB counts 2 per update, PostgreSQL cannot tell an insert from an update). Then the new
and newer records are written in one transaction, by one upsert per dialect that compares again itself:

- SQL Server: `MERGE … WITH (HOLDLOCK) … WHEN MATCHED AND (target.ts IS NULL OR source.ts > target.ts)`,
  one row per execution (pyodbc `fast_executemany` sends them as one array);
- PostgreSQL and SQLite: `INSERT … ON CONFLICT (key) DO UPDATE … WHERE t.ts IS NULL OR excluded.ts > t.ts`;
- MariaDB: `INSERT … ON DUPLICATE KEY UPDATE col = CASE WHEN <newer> THEN VALUES(col) ELSE col END`, the
  timestamp column assigned last, as MariaDB assigns left to right and later columns would compare with
  the timestamp just written.

A stored NULL timestamp is overwritten; an incoming NULL one is refused (it cannot be ordered). A key twice
in one batch: its newest record is written, the others count as skipped. The counts are exact as long as
nobody else writes the same keys during the batch; last write wins holds either way. On MariaDB a record
conflicting on another unique key of the table updates that row (ON DUPLICATE KEY matches any unique key):
give it tables whose only unique key is the sink's key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, mysql, postgresql, sqlite

from sync_pipeline.engine.sinks.sql_rows import (
    Key,
    RefusedRecord,
    StoredRows,
    TableColumns,
    write_isolating_refusals,
)


@dataclass
class UpsertCounts:
    """What one `write` did: rows inserted, rows updated, records skipped as older or equal, records refused."""

    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    refused: list[RefusedRecord] = field(default_factory=list)


class SqlUpsertSink:
    """Upserts records (dicts keyed by the table's column names) on `key_columns`, last write wins by
    `timestamp_column`; `columns` are the ones written (default: every column of the table)."""

    def __init__(
        self,
        engine: sa.Engine,
        table: sa.Table,
        key_columns: Sequence[str],
        timestamp_column: str,
        columns: Sequence[str] | None = None,
    ) -> None:
        if timestamp_column not in table.c or timestamp_column in key_columns:
            raise ValueError(f"timestamp_column: {timestamp_column!r} is not a non-key column of {table.name}")
        if not _is_unique_key(table, set(key_columns)):
            raise ValueError(
                f"key_columns: {', '.join(key_columns)} are not the primary key or a unique constraint of "
                f"{table.name}: an upsert needs one to find the stored row"
            )
        self.engine = engine
        self.table = table
        written = list(table.c.keys()) if columns is None else [*columns, timestamp_column]
        self._columns = TableColumns(table, key_columns, written)
        self._timestamp = table.c[timestamp_column]
        self._not_null = {timestamp_column: "NULL timestamp: last write wins cannot order it"}
        self._upsert = upsert_statement(engine.dialect.name, self._columns, self._timestamp)
        self._stored = StoredRows(engine.dialect.name, self._columns, self._timestamp)

    def key_of(self, record: Mapping[str, Any]) -> Key:
        """A record's key values, as refusals and unmatched records are reported by."""
        return self._columns.key_of(record)

    def write(self, records: Sequence[Mapping[str, Any]]) -> UpsertCounts:
        """Upsert a batch; a refused record is reported by key, column and reason, and the others are written.

        Any other database error raises `SqlSinkUnavailable`; writing the batch again is harmless."""
        counts = UpsertCounts()
        candidates: dict[Any, int] = {}  # key -> position of its newest record in `records`
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
        positions = list(candidates.values())
        rows = [self._columns.row(records[position]) for position in positions]
        stored = self._stored.matches(self.engine, rows)
        to_write = [n for n in range(len(rows)) if stored.get(n, True)]
        counts.skipped += len(rows) - len(to_write)

        def upsert(conn: sa.Connection, chosen: Sequence[int]) -> None:
            conn.execute(self._upsert.statement, [self._upsert.parameters(rows[n]) for n in chosen])

        refused = write_isolating_refusals(
            self.engine, self.table, upsert, to_write, lambda n: self._columns.key_of(rows[n])
        )
        counts.refused.extend(refused.values())
        for n in to_write:
            if n in refused:
                continue
            if n in stored:
                counts.updated += 1
            else:
                counts.inserted += 1
        return counts


@dataclass(frozen=True)
class UpsertStatement:
    """A dialect's upsert and how one row's values become its parameters."""

    statement: sa.Executable
    parameters: Callable[[Mapping[str, Any]], dict[str, Any]]


def upsert_statement(dialect_name: str, columns: TableColumns, timestamp: sa.Column[Any]) -> UpsertStatement:
    """The last-write-wins upsert of the written columns for `dialect_name`, executed once per row."""
    table = columns.table
    if dialect_name in ("postgresql", "sqlite"):
        insert = (postgresql if dialect_name == "postgresql" else sqlite).insert(table)
        statement: sa.Executable = insert.on_conflict_do_update(
            index_elements=columns.keys,
            set_={column.name: insert.excluded[column.name] for column in columns.updated},
            where=sa.or_(timestamp.is_(None), insert.excluded[timestamp.name] > timestamp),
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
