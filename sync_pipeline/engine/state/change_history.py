"""TB_R_SYNC_HISTORY and TB_R_SYNC_CONFLICT: what a sync changed in the application's table, and what it
would not change without someone looking.

A change is written right after the write that made it, with its run. When the run commits all its
writes at its end (`commit: run`), its changes are written unapplied and marked applied after that
commit, or removed when the run rolls back; a change left unapplied belongs to a run killed before its
commit, whose writes the database undid. Values are JSON, a timestamp as ISO text.

A conflict is kept once per record: seen again, its row gets the latest reason and values, one more
sighting and the time; a conflicting record's row is looked up by key in chunks under SQL Server's
2,100 parameters.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.state.tracking import TrackingUnavailable, utc_now
from sync_pipeline.engine.tables import conflict_table, history_table

KEYS_PER_LOOKUP = 2000
"""Record keys in one IN list: under SQL Server's 2,100 parameters with the EntityType."""
MAX_REASON = 400


@dataclass(frozen=True)
class ChangedRow:
    """One change to a stored row: its key as text, what kind (`updated`, `deleted`, `restored`), the old
    and new values of what changed."""

    record_key: str
    change: str
    old: Mapping[str, Any]
    new: Mapping[str, Any]


@dataclass(frozen=True)
class ConflictingRow:
    """A record not applied, by key as text: why, and the differing values stored and incoming."""

    record_key: str
    reason: str
    stored: Mapping[str, Any]
    incoming: Mapping[str, Any]


def values_json(values: Mapping[str, Any]) -> str:
    """Values as JSON text, keys sorted; timestamps and dates as ISO text, anything else JSON lacks as text."""
    return json.dumps(values, sort_keys=True, default=_as_text)


def _as_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else str(value)


class ChangeHistory:
    """Writes one run's changes and conflicts for one EntityType to the Log database."""

    def __init__(self, engine: sa.Engine, entity_type: str, run_id: str | None) -> None:
        self.engine = engine
        self._entity_type = entity_type
        self._run_id = run_id
        history = history_table.c
        self._this_run = sa.and_(
            history.EntityType == entity_type, history.RunId == run_id, history.AppliedOn.is_(None)
        )

    def record(self, changes: Sequence[ChangedRow], applied: bool) -> None:
        """Keep the changes; `applied` when their writes are already committed."""
        if not changes:
            return
        now = utc_now()
        rows = [
            {
                "EntityType": self._entity_type,
                "RecordKey": change.record_key,
                "Change": change.change,
                "OldValues": values_json(change.old),
                "NewValues": values_json(change.new),
                "RunId": self._run_id,
                "ChangedOn": now,
                "AppliedOn": now if applied else None,
            }
            for change in changes
        ]
        self._run(lambda conn: conn.execute(sa.insert(history_table), rows), f"write {history_table.name}")

    def applied(self) -> None:
        """The run's writes were committed: mark its changes applied."""
        update = sa.update(history_table).where(self._this_run).values(AppliedOn=utc_now())
        self._run(lambda conn: conn.execute(update), f"mark changes applied in {history_table.name}")

    def discard(self) -> None:
        """The run's writes were rolled back: remove its unapplied changes."""
        self._run(
            lambda conn: conn.execute(sa.delete(history_table).where(self._this_run)),
            f"remove unapplied changes from {history_table.name}",
        )

    def flag(self, conflicts: Sequence[ConflictingRow]) -> None:
        """Keep the conflicts: new ones inserted, those already flagged brought up to date."""
        if not conflicts:
            return
        latest = {conflict.record_key: conflict for conflict in conflicts}
        now = utc_now()
        table = conflict_table.c

        def write(conn: sa.Connection) -> None:
            keys = list(latest)
            known: set[str] = set()
            for start in range(0, len(keys), KEYS_PER_LOOKUP):
                chunk = keys[start : start + KEYS_PER_LOOKUP]
                query = sa.select(table.RecordKey).where(
                    table.EntityType == self._entity_type, table.RecordKey.in_(chunk)
                )
                known.update(conn.execute(query).scalars())
            values = [self._conflict_row(conflict, now) for conflict in latest.values()]
            again = [row for row in values if row["b_RecordKey"] in known]
            first = [row for row in values if row["b_RecordKey"] not in known]
            if again:
                conn.execute(_seen_again, again)
            if first:
                conn.execute(_first_seen, first)

        self._run(write, f"write {conflict_table.name}")

    def _conflict_row(self, conflict: ConflictingRow, now: dt.datetime) -> dict[str, Any]:
        return {
            "b_EntityType": self._entity_type,
            "b_RecordKey": conflict.record_key,
            "b_Reason": conflict.reason[:MAX_REASON],
            "b_Stored": values_json(conflict.stored),
            "b_Incoming": values_json(conflict.incoming),
            "b_Now": now,
            "b_RunId": self._run_id,
        }

    def _run(self, work: Callable[[sa.Connection], object], what: str) -> None:
        """`work` in one transaction; a database error raises `TrackingUnavailable` saying `what` failed."""
        try:
            with self.engine.begin() as conn:
                work(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot {what}: {describe_db_error(exc)}") from exc


_conflicts = conflict_table.c
_seen_again = (
    sa.update(conflict_table)
    .where(_conflicts.EntityType == sa.bindparam("b_EntityType"), _conflicts.RecordKey == sa.bindparam("b_RecordKey"))
    .values(
        Reason=sa.bindparam("b_Reason"),
        StoredValues=sa.bindparam("b_Stored"),
        IncomingValues=sa.bindparam("b_Incoming"),
        Seen=_conflicts.Seen + 1,
        LastSeenOn=sa.bindparam("b_Now"),
        RunId=sa.bindparam("b_RunId"),
    )
)
_first_seen = sa.insert(conflict_table).values(
    EntityType=sa.bindparam("b_EntityType"),
    RecordKey=sa.bindparam("b_RecordKey"),
    Reason=sa.bindparam("b_Reason"),
    StoredValues=sa.bindparam("b_Stored"),
    IncomingValues=sa.bindparam("b_Incoming"),
    Seen=1,
    FirstSeenOn=sa.bindparam("b_Now"),
    LastSeenOn=sa.bindparam("b_Now"),
    RunId=sa.bindparam("b_RunId"),
)


def listed_conflicts(engine: sa.Engine, limit: int) -> list[dict[str, Any]]:
    """The flagged conflicts, the most recently seen first, at most `limit`."""
    table = conflict_table.c
    query = sa.select(conflict_table).order_by(table.LastSeenOn.desc(), table.EntityType, table.RecordKey)
    return _listed(engine, query.limit(limit), conflict_table.name)


def listed_changes(engine: sa.Engine, limit: int) -> list[dict[str, Any]]:
    """The kept changes, the newest first, at most `limit`."""
    query = sa.select(history_table).order_by(history_table.c.ChangedOn.desc(), history_table.c.Id.desc())
    return _listed(engine, query.limit(limit), history_table.name)


def _listed(engine: sa.Engine, query: sa.Select[Any], name: str) -> list[dict[str, Any]]:
    try:
        with engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]
    except sa.exc.SQLAlchemyError as exc:
        raise TrackingUnavailable(f"cannot read {name}: {describe_db_error(exc)}") from exc
