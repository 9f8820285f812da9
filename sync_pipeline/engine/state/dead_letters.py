"""TB_R_SYNC_DEAD_LETTER: runs that failed after their last retry, kept until a run of them succeeds.

One row per EntityType (for a customer's run, `<EntityType>/<customer>`): the latest reason, the
attempts of every failed run added up, when it first and last failed and the last run's id. A run that
then succeeds removes the row; `sync-pipeline logs --dead-letters` lists them. `sync-pipeline requeue`
marks a customer's rows (RequeuedAt) and the sync's customers sensor launches one run of it for the
mark; if that run fails too, the row is kept as before with the mark cleared.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.state.tracking import TrackingUnavailable, utc_now
from sync_pipeline.engine.tables import dead_letter_table as _table

MAX_REASON = 4000


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered run, as listed."""

    entity_type: str
    reason: str
    attempts: int
    first_failed_on: dt.datetime
    last_failed_on: dt.datetime
    run_id: str | None
    requeued_at: dt.datetime | None
    """When a run of it was asked for again (`sync-pipeline requeue`); None when it was not, or failed since."""


class DeadLetters:
    """Reads and writes TB_R_SYNC_DEAD_LETTER in the Log database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(self, entity_type: str, reason: str, attempts: int, run_id: str | None) -> None:
        """Keep a run that failed after its last retry: a new row, or the existing one with the attempts
        added and the latest reason, time and run (an UPDATE, then an INSERT if there was none)."""
        params = {
            "b_EntityType": entity_type,
            "b_Reason": reason[:MAX_REASON],
            "b_Attempts": attempts,
            "b_Now": utc_now(),
            "b_RunId": run_id,
        }
        try:
            with self.engine.begin() as conn:
                if conn.execute(_again, params).rowcount == 0:
                    conn.execute(_first, params)
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot write {_table.name}: {describe_db_error(exc)}") from exc

    def clear(self, entity_type: str) -> bool:
        """Remove the row of a run that succeeded; whether there was one."""
        try:
            with self.engine.begin() as conn:
                return bool(conn.execute(_clear, {"entity_type": entity_type}).rowcount)
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot write {_table.name}: {describe_db_error(exc)}") from exc

    def requeue(self, entity_types: Sequence[str], at: dt.datetime | None = None) -> int:
        """Mark the rows of `entity_types` for a new run, at `at` (naive UTC, default now); how many there were."""
        if not entity_types:
            return 0
        try:
            with self.engine.begin() as conn:
                marked = sa.update(_table).where(_table.c.EntityType.in_(list(entity_types)))
                return int(conn.execute(marked.values(RequeuedAt=at or utc_now())).rowcount)
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot write {_table.name}: {describe_db_error(exc)}") from exc

    def listed(self) -> list[DeadLetter]:
        """Every dead-lettered run, the most recent failure first."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(_listed).all()
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot read {_table.name}: {describe_db_error(exc)}") from exc
        return [DeadLetter(*row) for row in rows]


_again = (
    sa.update(_table)
    .where(_table.c.EntityType == sa.bindparam("b_EntityType"))
    .values(
        Reason=sa.bindparam("b_Reason"),
        Attempts=_table.c.Attempts + sa.bindparam("b_Attempts"),
        LastFailedOn=sa.bindparam("b_Now"),
        RunId=sa.bindparam("b_RunId"),
        RequeuedAt=None,  # a re-queued run that failed has had its run
    )
)
_first = sa.insert(_table).values(
    EntityType=sa.bindparam("b_EntityType"),
    Reason=sa.bindparam("b_Reason"),
    Attempts=sa.bindparam("b_Attempts"),
    FirstFailedOn=sa.bindparam("b_Now"),
    LastFailedOn=sa.bindparam("b_Now"),
    RunId=sa.bindparam("b_RunId"),
)
_clear = sa.delete(_table).where(_table.c.EntityType == sa.bindparam("entity_type"))
_listed = sa.select(
    _table.c.EntityType,
    _table.c.Reason,
    _table.c.Attempts,
    _table.c.FirstFailedOn,
    _table.c.LastFailedOn,
    _table.c.RunId,
    _table.c.RequeuedAt,
).order_by(_table.c.LastFailedOn.desc(), _table.c.EntityType)
