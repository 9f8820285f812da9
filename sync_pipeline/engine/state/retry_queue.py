"""The retry queue of records, as people read and steer it: TB_R_SYNC_REJECTED's rows, queued or dead-lettered.

A record refused or failing is kept there with its count of failed runs (engine/state/tracking.py
`record_rejected`) and tried again every run; a per-record sink's record that failed
`retries.max_record_attempts` runs is dead-lettered (DeadLetteredOn) and no longer sent. `resend` re-queues
dead records (count 0, no DeadLetteredOn): the next run sends each once more. Not to be confused with
TB_R_SYNC_DEAD_LETTER (engine/state/dead_letters.py), which keeps whole runs of a customer.

A since-cursor entity's queued records are read again by key at the start of every run
(`engine/sources/queued.py`), since its mark may have moved past them: a per-record sink takes one off in
the transaction of its row hash (`tracking.clear_rejection`), a SQL sink takes off those a batch wrote,
or left as they were because the table is as far on already (`take_off_queue`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.state.tracking import TrackingUnavailable, chunks
from sync_pipeline.engine.state.tracking_sql import MAX_IDS_PER_LOOKUP
from sync_pipeline.engine.tables import rejected_table

_queue = rejected_table.c


@contextmanager
def _reading(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection to read the queue; a database error is `TrackingUnavailable`, naming the table."""
    try:
        with engine.connect() as conn:
            yield conn
    except sa.exc.SQLAlchemyError as exc:
        raise TrackingUnavailable(f"cannot read {rejected_table.name}: {describe_db_error(exc)}") from exc


@contextmanager
def _writing(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction to write the queue; a database error is `TrackingUnavailable`, naming the table."""
    try:
        with engine.begin() as conn:
            yield conn
    except sa.exc.SQLAlchemyError as exc:
        raise TrackingUnavailable(f"cannot write {rejected_table.name}: {describe_db_error(exc)}") from exc


@dataclass(frozen=True)
class QueuedRecord:
    """One record of the retry queue as listed: how many runs it failed, its first and last error and when."""

    entity: str
    entity_id: str
    attempts: int
    http_response_code: int | None
    first_error: str | None
    """None for a row kept before first errors were (its last error is then the only one known)."""
    first_failed_on: dt.datetime
    last_error: str
    last_failed_on: dt.datetime
    response_excerpt: str | None
    dead_lettered_on: dt.datetime | None


@dataclass(frozen=True)
class QueueCounts:
    """An entity's records in the retry queue: still tried every run, and dead-lettered."""

    queued: int
    dead: int


def queue_query(entity_types: Sequence[str], dead: bool, limit: int) -> sa.Select[Any]:
    """The queued (or dead-lettered) records of these entities, the most recently failed first."""
    state = _queue.DeadLetteredOn.is_not(None) if dead else _queue.DeadLetteredOn.is_(None)
    return (
        sa.select(
            _queue.EntityType,
            _queue.EntityId,
            _queue.RejectionCount,
            _queue.HttpResponseCode,
            _queue.FirstReason,
            _queue.FirstRejectedOn,
            _queue.Reason,
            _queue.LastRejectedOn,
            _queue.ResponseExcerpt,
            _queue.DeadLetteredOn,
        )
        .where(_queue.EntityType.in_(list(entity_types)), state)
        .order_by(_queue.LastRejectedOn.desc(), _queue.EntityType, _queue.EntityId)
        .limit(limit)
    )


def queued_records(engine: sa.Engine, entity_types: Sequence[str], dead: bool, limit: int) -> list[QueuedRecord]:
    """The records of these entities in the retry queue (`dead`: the dead-lettered ones), at most `limit`."""
    with _reading(engine) as conn:
        rows = conn.execute(queue_query(entity_types, dead, limit)).all()
    return [QueuedRecord(*row) for row in rows]


def queue_counts_query(entity_type: str) -> sa.Select[int, int]:
    """One count of an entity's queue rows and of the dead-lettered among them (COUNT skips NULLs)."""
    return sa.select(sa.func.count(), sa.func.count(_queue.DeadLetteredOn)).where(_queue.EntityType == entity_type)


def queue_counts(engine: sa.Engine, entity_type: str) -> QueueCounts:
    """How many of the entity's records are queued (tried again next run) and dead-lettered, now."""
    with _reading(engine) as conn:
        total, dead = conn.execute(queue_counts_query(entity_type)).one()
    return QueueCounts(int(total) - int(dead), int(dead))


def queue_ids_query(entity_type: str, dead: bool | None = None) -> sa.Select[Any]:
    """The IDs of the entity's records in the retry queue: all, or only the dead-lettered (`dead` True) or the
    still tried (False) ones; one index range of (EntityType, EntityId)."""
    query = sa.select(_queue.EntityId).where(_queue.EntityType == entity_type).order_by(_queue.EntityId)
    if dead is not None:
        query = query.where(_queue.DeadLetteredOn.is_not(None) if dead else _queue.DeadLetteredOn.is_(None))
    return query


def queue_ids(engine: sa.Engine, entity_type: str, dead: bool | None = None) -> list[str]:
    """The IDs of the entity's records in the retry queue, in id order (see `queue_ids_query`)."""
    with _reading(engine) as conn:
        return list(conn.execute(queue_ids_query(entity_type, dead)).scalars())


def dead_among_query(entity_type: str, entity_ids: Sequence[str]) -> sa.Select[Any]:
    """Which of these IDs are dead-lettered records of the entity (a chunk under SQL Server's 2100 parameters)."""
    return sa.select(_queue.EntityId).where(
        _queue.EntityType == entity_type, _queue.EntityId.in_(list(entity_ids)), _queue.DeadLetteredOn.is_not(None)
    )


def requeue_statement(entity_type: str, entity_ids: Sequence[str] | None) -> sa.Update:
    """Dead records of the entity (these, or all when None) back in the queue: no failed run counted, not dead."""
    statement = sa.update(rejected_table).where(_queue.EntityType == entity_type, _queue.DeadLetteredOn.is_not(None))
    if entity_ids is not None:
        statement = statement.where(_queue.EntityId.in_(list(entity_ids)))
    return statement.values(RejectionCount=0, DeadLetteredOn=None)


def dead_among(engine: sa.Engine, entity_type: str, entity_ids: Sequence[str]) -> set[str]:
    """Those of `entity_ids` that are dead-lettered records of `entity_type`."""
    with _reading(engine) as conn:
        found: set[str] = set()
        for chunk in chunks(list(entity_ids), MAX_IDS_PER_LOOKUP):
            found.update(conn.execute(dead_among_query(entity_type, chunk)).scalars())
        return found


def resend(engine: sa.Engine, entity_type: str, entity_ids: Sequence[str] | None) -> int:
    """Re-queue the entity's dead records (these, or all when None), in one transaction; how many were."""
    with _writing(engine) as conn:
        if entity_ids is None:
            return int(conn.execute(requeue_statement(entity_type, None)).rowcount)
        return sum(
            int(conn.execute(requeue_statement(entity_type, chunk)).rowcount)
            for chunk in chunks(list(entity_ids), MAX_IDS_PER_LOOKUP)
        )


def take_off_queue(engine: sa.Engine, entity: str, entity_ids: Iterable[str]) -> None:
    """These queued records went through: their TB_R_SYNC_REJECTED rows go (chunks under 2,100 parameters)."""
    with _writing(engine) as conn:
        for chunk in chunks(sorted(set(entity_ids)), MAX_IDS_PER_LOOKUP):
            conn.execute(_taken_off, {"entity_type": entity, "entity_ids": list(chunk)})


_taken_off = sa.delete(rejected_table).where(
    _queue.EntityType == sa.bindparam("entity_type"),
    _queue.EntityId.in_(sa.bindparam("entity_ids", expanding=True)),
)
