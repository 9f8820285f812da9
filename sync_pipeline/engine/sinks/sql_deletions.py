"""Rows a complete listing no longer includes: marked deleted in the application's table, never removed.

After a run that read every record of a source that lists them all (state `none`: no mark narrows
the read), the stored keys of the run's partition (a customer's rows; the whole table without one)
are compared with the keys the run saw: a stored row not seen gets the time in its deleted column,
a row marked deleted that was seen again gets it cleared. The keys seen are kept as 64-bit
fingerprints (`SeenKeys`: 8 bytes a key, 8 MB per million), and the partition's stored keys are
streamed past them in chunks, so memory stays flat in the number of rows; a fingerprint shared by a
gone key and a seen one (about one in 10^7 at a million keys) leaves that row unmarked for a run.
Each row is updated by its key (an executemany: a few parameters per execution on every dialect).

Every key a run saw is stored by then (written, or kept as the newer row), so the partition holds
as many rows as the run saw keys exactly when none is gone: one count tells, and the usual night's
listing, which left nothing out, streams only the rows marked deleted (to clear those it brought
back), not a million keys (3 to 4 s at a million on PostgreSQL, before). That holds where two seen
keys are never one stored row: keys of integers and GUIDs besides the partition's, not text (a
case-insensitive collation makes `A` and `a` one row) or timestamps (a column's precision makes
two one); other keys are always compared one by one. Should someone else delete as many of the
seen rows during the run as it left out, those wait for the next run to be marked.
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

    def __len__(self) -> int:
        """How many different keys were seen (two sharing a fingerprint count once: never more than seen)."""
        fingerprints = self._fingerprints()
        return int(np.count_nonzero(np.diff(fingerprints))) + 1 if len(fingerprints) else 0

    def among(self, keys: Sequence[Key]) -> npt.NDArray[np.bool_]:
        """For each of `keys`, whether it was seen (a fingerprint match)."""
        fingerprints = self._fingerprints()
        if not len(fingerprints) or not keys:
            return np.zeros(len(keys), dtype=bool)
        return contains(fingerprints, np.fromiter(map(hash, keys), np.int64, len(keys)))

    def _fingerprints(self) -> npt.NDArray[np.int64]:
        if self._sorted is None:
            self._sorted = np.sort(np.frombuffer(self._added, np.int64))
        return self._sorted


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
        self._marked = self._stored.where(self._deleted.is_not(None))
        self._counts = sa.select(sa.func.count(), sa.func.count(self._deleted)).select_from(table).where(*where)
        self._counted = all(
            isinstance(column.type, sa.Integer | sa.Uuid) for column in self._keys if column.name not in self._partition
        )
        """Whether two keys the run saw are never one stored row, so counting the rows tells whether one is gone."""
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
                read = self._read(conn, seen)
                if read is None:
                    return DeletionCounts(gone, back)
                stored = conn.execute(read.execution_options(stream_results=True))
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

    def _read(self, conn: sa.Connection, seen: SeenKeys) -> sa.Select[Any] | None:
        """The stored rows to compare with `seen`: all of them, only those marked deleted when the count says
        none is gone, or none when none is gone and none is marked."""
        if not self._counted:
            return self._stored
        stored_rows, marked_rows = conn.execute(self._counts).one()
        if stored_rows > len(seen):  # a stored row the listing left out
            return self._stored
        return self._marked if marked_rows else None

    def _parameters(self, key: Key, stamp: dt.datetime | None) -> dict[str, Any]:
        return {**{f"key_{n}": value for n, value in enumerate(key)}, "deleted_at": stamp}
