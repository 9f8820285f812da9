"""Rows a complete listing no longer includes: marked deleted in the application's table, never removed.

After a run that read every record of a source that lists them all (state `none`: no mark narrows
the read), the stored keys of the run's partition (a customer's rows; the whole table without one)
are compared with the keys the run saw: a stored row not seen gets the time in its deleted column,
a row marked deleted that was seen again gets it cleared. The comparison is done on the keys the
database returns, a partition at a time in memory (a customer's workflows, not a million rows), and
each row is updated by its key (an executemany: a few parameters per execution on every dialect).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.sinks.sql_rows import Key, SqlSinkUnavailable
from sync_pipeline.engine.sinks.sql_target import SqlTarget


@dataclass(frozen=True)
class DeletionCounts:
    """The keys of rows newly marked deleted, and of rows marked deleted that the listing brought back (with
    the time they had been marked)."""

    gone: list[Key]
    back: list[tuple[Key, dt.datetime]]

    @property
    def deleted(self) -> int:
        """Rows newly marked deleted."""
        return len(self.gone)

    @property
    def revived(self) -> int:
        """Rows marked deleted that came back."""
        return len(self.back)


class MissingRows:
    """Marks the rows of a table (of one partition) that a complete listing did not include."""

    def __init__(
        self, table: sa.Table, key_columns: Sequence[str], deleted_column: str, partition: Mapping[str, Any]
    ) -> None:
        if deleted_column not in table.c or deleted_column in key_columns or not table.c[deleted_column].nullable:
            raise ValueError(
                f"deleted_column: {deleted_column!r} is not a nullable non-key column of {table.name} (its columns: "
                f"{', '.join(table.c.keys())})"
            )
        self._table = table
        self.deleted_column = deleted_column
        self._keys = [table.c[name] for name in key_columns]
        self._deleted = table.c[deleted_column]
        self._partition = dict(partition)
        where = [table.c[name] == value for name, value in self._partition.items()]
        self._stored = sa.select(*self._keys, self._deleted).where(*where)
        by_key = [column == sa.bindparam(f"key_{n}", type_=column.type) for n, column in enumerate(self._keys)]
        stamp = sa.bindparam("deleted_at", type_=self._deleted.type)
        self._set = sa.update(table).where(*by_key).values({self._deleted.name: stamp})

    def mark(
        self,
        target: SqlTarget,
        seen: set[Key],
        now: dt.datetime,
        confirm: Callable[[list[Key]], list[bool]] | None = None,
    ) -> DeletionCounts:
        """Mark what `seen` lacks and clear what it brought back, in one transaction; with `confirm`, only
        the keys it confirms gone (one bool per key) are marked. A database error raises
        `SqlSinkUnavailable`."""
        try:
            with target.begin() as conn:
                stored = [(tuple(row[:-1]), row[-1]) for row in conn.execute(self._stored)]
                gone = [key for key, deleted in stored if deleted is None and key not in seen]
                if confirm is not None and gone:
                    gone = [key for key, confirmed in zip(gone, confirm(gone), strict=True) if confirmed]
                back = [(key, deleted) for key, deleted in stored if deleted is not None and key in seen]
                if gone:
                    conn.execute(self._set, [self._parameters(key, now) for key in gone])
                if back:
                    conn.execute(self._set, [self._parameters(key, None) for key, _ in back])
        except sa.exc.SQLAlchemyError as exc:
            raise SqlSinkUnavailable(
                f"cannot mark deleted rows of {self._table.name}: {describe_db_error(exc)}"
            ) from exc
        return DeletionCounts(gone, back)

    def _parameters(self, key: Key, stamp: dt.datetime | None) -> dict[str, Any]:
        return {**{f"key_{n}": value for n, value in enumerate(key)}, "deleted_at": stamp}
