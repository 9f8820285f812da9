"""Chosen columns of rows already in a table updated from records matched on a key; no row is ever inserted.

For each batch the keys the table holds are read first (`sql_rows.StoredRows`, matched by the
database itself), so a record matching no row is returned by its key, for the caller to log or retry,
whatever the driver's rowcount says. The matched records are then written in one transaction by one
`UPDATE … SET col = :set_n … WHERE key = :key_n`, executed once per row (an executemany: one row's
parameters per execution on every dialect, far under SQL Server's 2,100).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.sinks.sql_rows import (
    Key,
    RefusedRecord,
    StoredRows,
    TableColumns,
    write_isolating_refusals,
)
from sync_pipeline.engine.sinks.sql_target import SqlTarget


@dataclass
class UpdateCounts:
    """What one `write` did: rows updated, the keys of records that matched no row, records refused."""

    updated: int = 0
    not_found: list[Key] = field(default_factory=list)
    refused: list[RefusedRecord] = field(default_factory=list)


class SqlUpdateSink:
    """Updates `columns` of the rows of `table` matched on `key_columns` from records (dicts keyed by the
    table's column names); a record's other columns are left alone."""

    def __init__(self, target: SqlTarget, table: sa.Table, key_columns: Sequence[str], columns: Sequence[str]) -> None:
        overlap = set(key_columns) & set(columns)
        if overlap:
            raise ValueError(f"columns: {', '.join(sorted(overlap))} are key columns, which an update never changes")
        self.target = target
        self.table = table
        self.key_columns = tuple(key_columns)
        self._columns = TableColumns(table, key_columns, columns)
        self._update = update_statement(self._columns)
        self._stored = StoredRows(target.dialect.name, self._columns)

    def key_of(self, record: Mapping[str, Any]) -> Key:
        """A record's key values, as refusals and unmatched records are reported by."""
        return self._columns.key_of(record)

    def write(self, records: Sequence[Mapping[str, Any]]) -> UpdateCounts:
        """Update the rows the records match; the unmatched are returned by key, the refused with their reason.

        Any other database error raises `SqlSinkUnavailable`; writing the batch again is harmless."""
        counts = UpdateCounts()
        rows = []
        for record in records:
            refusal = self._columns.refusal(record)
            if refusal is None:
                rows.append(self._columns.row(record))
            else:
                counts.refused.append(refusal)
        found = self._stored.matches(self.target, rows)
        matched = [n for n in range(len(rows)) if n in found]
        counts.not_found = [self._columns.key_of(row) for n, row in enumerate(rows) if n not in found]

        def update(conn: sa.Connection, chosen: Sequence[int]) -> None:
            conn.execute(self._update, [update_parameters(self._columns, rows[n]) for n in chosen])

        refused = write_isolating_refusals(
            self.target, self.table, update, matched, lambda n: self._columns.key_of(rows[n])
        )
        counts.refused.extend(refused.values())
        counts.updated = len(matched) - len(refused)
        return counts


def update_statement(columns: TableColumns) -> sa.Update:
    """`UPDATE … SET col = :set_n … WHERE key = :key_n …` of the written columns, typed as the table's."""
    return (
        sa.update(columns.table)
        .where(*(column == sa.bindparam(f"key_{n}", type_=column.type) for n, column in enumerate(columns.keys)))
        .values({column.name: sa.bindparam(f"set_{n}", type_=column.type) for n, column in enumerate(columns.updated)})
    )


def update_parameters(columns: TableColumns, row: Mapping[str, Any]) -> dict[str, Any]:
    """One row's parameters of `update_statement`."""
    keys = {f"key_{n}": row[column.name] for n, column in enumerate(columns.keys)}
    return keys | {f"set_{n}": row[column.name] for n, column in enumerate(columns.updated)}
