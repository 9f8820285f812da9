"""Purging a sync's logs older than its retention: only its own entities' rows, a few thousand at a time.

Each Log table to purge is a `PurgeTarget` in `LOG_RETENTION`: its timestamp column and the column that
says which entity a row is of. A row is the sync's when that column is one of its EntityTypes, or one
followed by `/<customer>` (a sync run per customer); SchedulerLog, TAMHR's shared table, names the
entity inside `Activity` (`Sync Batch: <EntityType>`), so every other application's rows stay.

Rows go in chunks, each its own statement and transaction: `DELETE TOP (n)` on SQL Server, `DELETE ...
LIMIT n` on MariaDB, and elsewhere a delete of the keys a `LIMIT n` subquery selects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from sync_pipeline.engine.audit.scheduler_log import activity
from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.tables import conflict_table, credential_use_table, history_table, scheduler_log_table

PURGE_CHUNK_ROWS = 4000
"""Rows deleted per statement: below the 5,000 locks at which SQL Server escalates to a table lock, which
would hold up the syncs writing the same table while the purge runs."""


@dataclass(frozen=True)
class PurgeTarget:
    """A Log table whose old rows are purged: when a row was written (`timestamp_column`) and which entity it is
    of (`entity_column`, holding `label(EntityType)`: the EntityType itself unless said otherwise)."""

    table: sa.Table
    timestamp_column: str
    entity_column: str = "EntityType"
    label: Callable[[str], str] = str


LOG_RETENTION: tuple[PurgeTarget, ...] = (
    PurgeTarget(credential_use_table, "UsedAt"),
    PurgeTarget(scheduler_log_table, "CreatedOn", "Activity", activity),
    PurgeTarget(history_table, "ChangedOn"),
    PurgeTarget(conflict_table, "LastSeenOn"),
)
"""What a sync's retention job purges, one line per Log table."""


class PurgeFailed(Exception):
    """A Log table could not be purged; the chunks deleted before it stay deleted (a purge may simply run again)."""


def purge_older_than(
    engine: sa.Engine,
    targets: Sequence[PurgeTarget],
    entity_types: Sequence[str],
    before: dt.datetime,
    chunk_rows: int = PURGE_CHUNK_ROWS,
) -> dict[str, int]:
    """Delete the rows of `entity_types` (and of their customers) written before `before` (naive UTC) from
    each target, chunk by chunk; the rows deleted per table."""
    deleted: dict[str, int] = {}
    for target in targets:
        statement = chunk_delete(target, entity_types, before, engine.dialect.name, chunk_rows)
        deleted[target.table.name] = 0
        try:
            while True:
                with engine.begin() as conn:
                    rows = conn.execute(statement).rowcount
                deleted[target.table.name] += rows
                if rows < chunk_rows:
                    break
        except sa.exc.SQLAlchemyError as exc:
            raise PurgeFailed(
                f"cannot purge {target.table.name} after {deleted[target.table.name]} row(s): {describe_db_error(exc)}"
            ) from exc
    return deleted


def chunk_delete(
    target: PurgeTarget, entity_types: Sequence[str], before: dt.datetime, dialect_name: str, chunk_rows: int
) -> sa.Delete:
    """One chunk's DELETE for the dialect: at most `chunk_rows` of the target's rows of `entity_types` older
    than `before`; two parameters per EntityType and one for the time."""
    table = target.table
    entity = table.c[target.entity_column]
    labels = [target.label(entity_type) for entity_type in entity_types]
    where = sa.and_(
        table.c[target.timestamp_column] < before,
        sa.or_(entity.in_(labels), *(entity.startswith(f"{label}/", autoescape=True) for label in labels)),
    )
    if dialect_name == "mssql":
        return sa.delete(table).where(where).prefix_with(f"TOP ({int(chunk_rows)})")
    if dialect_name in ("mysql", "mariadb"):
        return sa.delete(table).where(where).ext(mysql.limit(chunk_rows))
    keys = list(table.primary_key.columns)
    chunk = sa.select(*keys).where(where).limit(chunk_rows)
    return sa.delete(table).where(sa.tuple_(*keys).in_(chunk) if len(keys) > 1 else keys[0].in_(chunk))
