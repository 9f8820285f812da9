"""TB_R_SYNC_TRACKING: which records the API has acknowledged.

Tracking rows are written only after a 2xx, in the same transaction as the call's SchedulerLog
row, so the two never disagree. A read that succeeded has its SchedulerLog row written with the next row
that is not deferred (the write of the batch its records went into), or at the latest with the
`MAX_DEFERRED_CALLS`th, or by `flush_calls` at the entity's end: one commit for many pages instead of one
each; a crash loses at most the rows of the reads since the last row written.
A failed call's row is written at once. A run reads its entity's tracked IDs once, streamed into a compact
snapshot (`TrackedIds`); lookups by ID are chunked under SQL Server's 2100-parameter limit.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.audit.scheduler_log import ApiCall, SchedulerLogWriter
from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.state.tracked_ids import TrackedIds
from sync_pipeline.engine.state.tracking_sql import (
    MAX_IDS_PER_LOOKUP,
    id_lookup,
    insert_tracking_rows,
    tracked_ids_query,
)
from sync_pipeline.engine.tables import DateTime2, rejected_table, scheduler_log_table, tracking_table

IDS_PER_STREAMED_CHUNK = 10_000
"""Tracked IDs fetched at a time while a run takes its snapshot: about a megabyte of text."""
MAX_DEFERRED_CALLS = 100
"""SchedulerLog rows of successful reads kept at most before they are written on their own."""


class TrackingUnavailable(Exception):
    """The Log database could not be read or written; nothing more can be sent safely."""


class DeliveredButUntracked(TrackingUnavailable):
    """The API acknowledged a batch but its tracking rows could not be written: it will be resent."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


@dataclass(frozen=True)
class Rejection:
    """One record that was not sent, or that the API refused on its own, and why."""

    entity_id: str
    http_status: int | None
    reason: str
    response_excerpt: str | None = None

    def describe(self) -> str:
        """`<id>: <reason>` for log lines."""
        return f"{self.entity_id}: {self.reason}"


def utc_now() -> dt.datetime:
    """Naive UTC, as DATETIME2 columns hold it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TrackingStore:
    """Reads and writes the Log database on behalf of one sync run."""

    def __init__(self, engine: sa.Engine, log_writer: SchedulerLogWriter) -> None:
        self.engine = engine
        self.log_writer = log_writer
        self._lookup, self._ids_per_lookup = id_lookup(engine.dialect.name)
        self._deferred: list[dict[str, Any]] = []
        self._deferring = threading.Lock()  # reads and batch writes log from several threads
        self._newly_tracked: Counter[str] = Counter()
        self._counting = threading.Lock()  # batches are tracked from several sender threads

    def tracked_ids(self, entity: str, tracked_before: dt.datetime | None = None) -> TrackedIds:
        """A snapshot of the IDs of `entity` tracked (before `tracked_before`, if given), by one streaming read.

        Exact as long as nobody else tracks this entity meanwhile, which its lock guarantees.
        """
        query = tracked_ids_query(entity, tracked_before)
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(yield_per=IDS_PER_STREAMED_CHUNK).execute(query)
                return TrackedIds(
                    result.scalars().partitions(), lambda ids: self.tracked_among(entity, ids, tracked_before)
                )
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot read {tracking_table.name}: {describe_db_error(exc)}") from exc

    def tracked_count(self, entity: str) -> int:
        """How many records of `entity` are tracked: what the receiver holds from us (an index range count)."""
        query = sa.select(sa.func.count()).select_from(tracking_table).where(tracking_table.c.EntityType == entity)
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(query).scalar_one())
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot read {tracking_table.name}: {describe_db_error(exc)}") from exc

    def tracked_among(
        self, entity: str, entity_ids: Sequence[str], tracked_before: dt.datetime | None = None
    ) -> set[str]:
        """Those of `entity_ids` already tracked for `entity` (before `tracked_before`, if given)."""
        query = self._lookup
        if tracked_before is not None:
            query = query.where(tracking_table.c.SyncTimestamp < tracked_before)
        try:
            with self.engine.connect() as conn:
                found: set[str] = set()
                for chunk in chunks(entity_ids, self._ids_per_lookup):
                    params = {"entity_type": entity, "entity_ids": list(chunk)}
                    found.update(conn.execute(query, params).scalars())
                return found
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot read {tracking_table.name}: {describe_db_error(exc)}") from exc

    def record_delivered(self, entity: str, entity_ids: Sequence[str], call: ApiCall, refresh: bool = False) -> None:
        """Track an acknowledged batch and log its call, atomically; `refresh` replaces existing rows."""
        try:
            with self.engine.begin() as conn:
                if refresh:
                    for chunk in chunks(entity_ids, MAX_IDS_PER_LOOKUP):
                        conn.execute(
                            sa.delete(tracking_table).where(
                                tracking_table.c.EntityType == entity, tracking_table.c.EntityId.in_(list(chunk))
                            )
                        )
                insert_tracking_rows(conn, entity, entity_ids, utc_now())
                self.log_writer.write(conn, entity, call)
        except sa.exc.SQLAlchemyError as exc:
            raise DeliveredButUntracked(
                f"{len(entity_ids)} records were delivered but could not be tracked (they will be resent "
                f"with the same Idempotency-Key): {describe_db_error(exc)}",
                len(entity_ids),
            ) from exc
        if not refresh:
            with self._counting:
                self._newly_tracked[entity] += len(entity_ids)

    def newly_tracked(self, entity: str) -> int:
        """Tracking rows of `entity` this store added (a refresh replaces rows, adding none)."""
        with self._counting:
            return self._newly_tracked[entity]

    def record_call(self, entity: str, call: ApiCall, deferred: bool = False) -> None:
        """Log a call that tracks nothing: a failed one (its records go again next run), a read, a table write;
        with the deferred rows waiting, in one statement. A `deferred` one (a read that succeeded) waits
        itself, unless `MAX_DEFERRED_CALLS` are waiting with it."""
        row = self.log_writer.row(entity, call)
        with self._deferring:
            self._deferred.append(row)
            if deferred and len(self._deferred) < MAX_DEFERRED_CALLS:
                return
            rows, self._deferred = self._deferred, []
        self._write_log_rows(rows)

    def flush_calls(self) -> None:
        """Write the deferred SchedulerLog rows now (at the end of an entity)."""
        with self._deferring:
            rows, self._deferred = self._deferred, []
        if rows:
            self._write_log_rows(rows)

    def _write_log_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(scheduler_log_table), rows)
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot write SchedulerLog: {describe_db_error(exc)}") from exc

    def record_rejected(
        self, entity: str, rejections: Sequence[Rejection], max_attempts: int | None = None
    ) -> list[Rejection]:
        """Keep refused or failed records, one row each with a count, first and last time and reason; they stay
        unsent and are tried again next run. With `max_attempts` (a per-record sink), a record whose count
        reaches it is dead-lettered (DeadLetteredOn): those newly dead are returned."""
        latest = {r.entity_id: r for r in rejections}  # one row per record, even if a batch repeats it
        now = utc_now()
        try:
            with self.engine.begin() as conn:
                known: dict[str, tuple[int, dt.datetime | None]] = {}
                for chunk in chunks(list(latest), MAX_IDS_PER_LOOKUP):
                    params = {"entity_type": entity, "entity_ids": chunk}
                    known.update((row[0], (row[1], row[2])) for row in conn.execute(_rejected_among, params))

                def dies(entity_id: str) -> bool:
                    count, dead_since = known.get(entity_id, (0, None))
                    return max_attempts is not None and dead_since is None and count + 1 >= max_attempts

                dead = [r for entity_id, r in latest.items() if dies(entity_id)]
                rows = {
                    entity_id: {**_rejection_values(entity, r, now), "DeadLetteredOn": now if dies(entity_id) else None}
                    for entity_id, r in latest.items()
                }
                again = [row for entity_id, row in rows.items() if entity_id in known]
                new = [row for entity_id, row in rows.items() if entity_id not in known]
                if again:
                    conn.execute(rejected_again, [{f"b_{key}": value for key, value in row.items()} for row in again])
                if new:
                    conn.execute(
                        sa.insert(rejected_table),
                        [
                            {**row, "RejectionCount": 1, "FirstRejectedOn": now, "FirstReason": row["Reason"]}
                            for row in new
                        ],
                    )
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot write {rejected_table.name}: {describe_db_error(exc)}") from exc
        return dead


def clear_rejection(conn: sa.Connection, entity: str, entity_id: str) -> None:
    """A refused record went through at last: its TB_R_SYNC_REJECTED row goes, inside the caller's transaction,
    so what is left there is what is refused now (and what the record-failure alert names)."""
    conn.execute(
        sa.delete(rejected_table).where(rejected_table.c.EntityType == entity, rejected_table.c.EntityId == entity_id)
    )


_rejected_among = sa.select(
    rejected_table.c.EntityId, rejected_table.c.RejectionCount, rejected_table.c.DeadLetteredOn
).where(
    rejected_table.c.EntityType == sa.bindparam("entity_type"),
    rejected_table.c.EntityId.in_(sa.bindparam("entity_ids", expanding=True)),
)
"""Which of a chunk of IDs already have a TB_R_SYNC_REJECTED row, with their count and whether they are dead
(the entity lock makes this race-free)."""

rejected_again = (
    sa.update(rejected_table)
    .where(rejected_table.c.EntityType == sa.bindparam("b_EntityType"))
    .where(rejected_table.c.EntityId == sa.bindparam("b_EntityId"))
    .values(
        RejectionCount=rejected_table.c.RejectionCount + 1,
        HttpResponseCode=sa.bindparam("b_HttpResponseCode"),
        Reason=sa.bindparam("b_Reason"),
        ResponseExcerpt=sa.bindparam("b_ResponseExcerpt"),
        LastRejectedOn=sa.bindparam("b_LastRejectedOn"),
        DeadLetteredOn=sa.func.coalesce(
            rejected_table.c.DeadLetteredOn, sa.bindparam("b_DeadLetteredOn", type_=DateTime2)
        ),
    )
)
"""A record refused again: one more, the latest status, reason and time, and when it died if it just did
(a dead one stays dead since it first was; an executemany)."""


def _rejection_values(entity: str, rejection: Rejection, now: dt.datetime) -> dict[str, object]:
    """The columns a rejection sets, keyed for the INSERT; `rejected_again` takes them with a `b_` prefix."""
    return {
        "EntityType": entity,
        "EntityId": rejection.entity_id,
        "HttpResponseCode": rejection.http_status,
        "Reason": rejection.reason,
        "ResponseExcerpt": rejection.response_excerpt,
        "LastRejectedOn": now,
    }
