"""Rows a complete listing no longer includes: marked deleted in the application's table, never removed.

After a run that read every record of a source that lists them all (state `none`: no mark narrows
the read), the stored keys of the run's partition (a customer's rows; the whole table without one)
are compared with the keys the run saw: a stored row not seen gets the time in its deleted column,
a row marked deleted that was seen again gets it cleared. The keys seen are kept as 64-bit
fingerprints (`SeenKeys`: 8 bytes a key, 8 MB per million), and the partition's stored keys are
streamed past them in chunks, so memory stays flat in the number of rows; a fingerprint shared by a
gone key and a seen one (about one in 10^7 at a million keys) leaves that row unmarked for a run.
Each row is updated by its key (an executemany: a few parameters per execution on every dialect).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.sinks.sql_rows import Key, SqlSinkUnavailable
from sync_pipeline.engine.sinks.sql_target import SqlTarget
from sync_pipeline.engine.state.tracked_ids import contains


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


STORED_KEYS_PER_CHUNK = 10_000


class SeenKeys:
    """The keys a run wrote, as sorted 64-bit fingerprints (Python's hash of the key, in this process)."""

    def __init__(self) -> None:
        self._added = bytearray()
        self._sorted: npt.NDArray[np.int64] | None = None

    def add(self, keys: Collection[Key]) -> None:
        """Keep these keys."""
        self._added += np.fromiter(map(hash, keys), np.int64, len(keys)).tobytes()
        self._sorted = None

    def among(self, keys: Sequence[Key]) -> npt.NDArray[np.bool_]:
        """For each of `keys`, whether it was seen (a fingerprint match)."""
        if self._sorted is None:
            self._sorted = np.sort(np.frombuffer(self._added, np.int64))
        if not len(self._sorted) or not keys:
            return np.zeros(len(keys), dtype=bool)
        return contains(self._sorted, np.fromiter(map(hash, keys), np.int64, len(keys)))


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
        seen: SeenKeys,
        now: dt.datetime,
        confirm: Callable[[list[Key]], list[bool]] | None = None,
    ) -> DeletionCounts:
        """Mark what `seen` lacks and clear what it brought back, in one transaction; with `confirm`, only
        the keys it confirms gone (one bool per key) are marked. A database error raises
        `SqlSinkUnavailable`."""
        gone: list[Key] = []
        back: list[tuple[Key, dt.datetime]] = []
        try:
            with target.begin() as conn:
                stored = conn.execute(self._stored.execution_options(stream_results=True))
                for chunk in stored.partitions(STORED_KEYS_PER_CHUNK):
                    keys = [tuple(row[:-1]) for row in chunk]
                    for key, row, was_seen in zip(keys, chunk, seen.among(keys), strict=True):
                        if row[-1] is None and not was_seen:
                            gone.append(key)
                        elif row[-1] is not None and was_seen:
                            back.append((key, row[-1]))
                if confirm is not None and gone:
                    gone = [key for key, confirmed in zip(gone, confirm(gone), strict=True) if confirmed]
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
