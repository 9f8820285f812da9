"""Chosen columns of rows already in a table updated from records matched on a key; no row is ever inserted.

For each batch the keys the table holds are read first (`sql_rows.StoredRows`, matched by the
database itself), so a record matching no row is returned by its key, for the caller to log or retry,
whatever the driver's rowcount says. The matched records are then written in one transaction by one
`UPDATE … SET col = :set_n … WHERE key = :key_n`, executed once per row (an executemany: one row's
parameters per execution on every dialect, far under SQL Server's 2,100).

With `forward_only` a status column only moves forward in its declared order: the stored status is
read with the keys, a record that would not move it is left alone (counted `kept`, no write), and the
UPDATE repeats the condition (`CASE status WHEN … END < :rank`), so a row another writer moved on
between the read and the write is not moved back either.
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
from sync_pipeline.specs.model import ForwardOnly


@dataclass
class UpdateCounts:
    """What one `write` did: rows updated, rows kept as they were (their status is as far or further on),
    the keys of records that matched no row, records refused."""

    updated: int = 0
    kept: int = 0
    not_found: list[Key] = field(default_factory=list)
    refused: list[RefusedRecord] = field(default_factory=list)


class SqlUpdateSink:
    """Updates `columns` of the rows of `table` matched on `key_columns` from records (dicts keyed by the
    table's column names); a record's other columns are left alone."""

    def __init__(
        self,
        target: SqlTarget,
        table: sa.Table,
        key_columns: Sequence[str],
        columns: Sequence[str],
        forward_only: ForwardOnly | None = None,
    ) -> None:
        overlap = set(key_columns) & set(columns)
        if overlap:
            raise ValueError(f"columns: {', '.join(sorted(overlap))} are key columns, which an update never changes")
        if forward_only is not None and forward_only.column not in columns:
            raise ValueError(f"forward_only.column: {forward_only.column!r} is not one of the columns set")
        self.target = target
        self.table = table
        self.key_columns = tuple(key_columns)
        self._forward_only = forward_only
        self._columns = TableColumns(table, key_columns, columns)
        self._update = update_statement(self._columns, forward_only)
        fetched = (forward_only.column,) if forward_only else ()
        self._stored = StoredRows(target.dialect.name, self._columns, fetched=fetched)

    def key_of(self, record: Mapping[str, Any]) -> Key:
        """A record's key values, as refusals and unmatched records are reported by."""
        return self._columns.key_of(record)

    def keys_of(self, records: Sequence[Mapping[str, Any]]) -> list[Key]:
        """Each record's `key_of`, in order."""
        return self._columns.keys_of(records)

    def write(self, records: Sequence[Mapping[str, Any]]) -> UpdateCounts:
        """Update the rows the records match; the unmatched are returned by key, the refused with their reason.

        Any other database error raises `SqlSinkUnavailable`; writing the batch again is harmless."""
        counts = UpdateCounts()
        rows = []
        for record in records:
            refusal = self._columns.refusal(record) or self._out_of_order(record)
            if refusal is None:
                rows.append(self._columns.row(record))
            else:
                counts.refused.append(refusal)
        found = self._stored.matches(self.target, rows)
        counts.not_found = [self._columns.key_of(row) for n, row in enumerate(rows) if n not in found]
        matched = [n for n in range(len(rows)) if n in found]
        if self._forward_only is not None:
            status, rank = self._forward_only.column, self._forward_only.rank
            moving = [n for n in matched if rank(found[n].values[status]) < rank(rows[n][status])]
            counts.kept, matched = len(matched) - len(moving), moving

        def update(conn: sa.Connection, chosen: Sequence[int]) -> None:
            conn.execute(self._update, [self._parameters(rows[n]) for n in chosen])

        refused = write_isolating_refusals(
            self.target, self.table, update, matched, lambda n: self._columns.key_of(rows[n])
        )
        counts.refused.extend(refused.values())
        counts.updated = len(matched) - len(refused)
        return counts

    def _out_of_order(self, record: Mapping[str, Any]) -> RefusedRecord | None:
        """A record whose status the forward-only order lacks: which way it moves is unknown, so it is refused."""
        forward = self._forward_only
        if forward is None or forward.rank(record.get(forward.column)) >= 0:
            return None
        value = record.get(forward.column)
        return RefusedRecord(
            self._columns.key_of(record),
            forward.column,
            f"{forward.column} {value!r} is not one of forward_only.order ({', '.join(forward.order)})",
        )

    def _parameters(self, row: Mapping[str, Any]) -> dict[str, Any]:
        parameters = update_parameters(self._columns, row)
        if self._forward_only is not None:
            parameters["rank"] = self._forward_only.rank(row[self._forward_only.column])
        return parameters


def update_statement(columns: TableColumns, forward_only: ForwardOnly | None = None) -> sa.Update:
    """`UPDATE … SET col = :set_n … WHERE key = :key_n …` of the written columns, typed as the table's; with
    `forward_only`, also `AND CASE status WHEN … END < :rank` (a status the order lacks ranks -1)."""
    where = [column == sa.bindparam(f"key_{n}", type_=column.type) for n, column in enumerate(columns.keys)]
    if forward_only is not None:
        status = columns.table.c[forward_only.column]
        rank = sa.case({value: n for n, value in enumerate(forward_only.order)}, value=status, else_=-1)
        where.append(rank < sa.bindparam("rank", type_=sa.Integer))
    return (
        sa.update(columns.table)
        .where(*where)
        .values({column.name: sa.bindparam(f"set_{n}", type_=column.type) for n, column in enumerate(columns.updated)})
    )


def update_parameters(columns: TableColumns, row: Mapping[str, Any]) -> dict[str, Any]:
    """One row's parameters of `update_statement` (without forward_only's rank)."""
    keys = {f"key_{n}": row[column.name] for n, column in enumerate(columns.keys)}
    return keys | {f"set_{n}": row[column.name] for n, column in enumerate(columns.updated)}
