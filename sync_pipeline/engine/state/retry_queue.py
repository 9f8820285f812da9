"""The retry queue of a since-cursor entity: its records in TB_R_SYNC_REJECTED, read again by key every run
(`engine/sources/queued.py`) and taken off once they go through.

A per-record sink takes a record off in the transaction of its row hash (`tracking.clear_rejection`); a
SQL sink takes off the queued records each batch wrote, or left as they were because the table is as
far on already, once the batch is written.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.state.tracking import TrackingUnavailable, chunks
from sync_pipeline.engine.state.tracking_sql import MAX_IDS_PER_LOOKUP
from sync_pipeline.engine.tables import rejected_table


def queued_entity_ids(engine: sa.Engine, entity: str) -> list[str]:
    """The EntityIds of the entity's records in the retry queue (TB_R_SYNC_REJECTED), in id order."""
    query = (
        sa.select(rejected_table.c.EntityId)
        .where(rejected_table.c.EntityType == entity)
        .order_by(rejected_table.c.EntityId)
    )
    try:
        with engine.connect() as conn:
            return list(conn.execute(query).scalars())
    except sa.exc.SQLAlchemyError as exc:
        raise TrackingUnavailable(f"cannot read {rejected_table.name}: {describe_db_error(exc)}") from exc


def take_off_queue(engine: sa.Engine, entity: str, entity_ids: Iterable[str]) -> None:
    """These queued records went through: their TB_R_SYNC_REJECTED rows go (chunks under 2,100 parameters)."""
    try:
        with engine.begin() as conn:
            for chunk in chunks(sorted(set(entity_ids)), MAX_IDS_PER_LOOKUP):
                conn.execute(_delete, {"entity_type": entity, "entity_ids": list(chunk)})
    except sa.exc.SQLAlchemyError as exc:
        raise TrackingUnavailable(f"cannot write {rejected_table.name}: {describe_db_error(exc)}") from exc


_delete = sa.delete(rejected_table).where(
    rejected_table.c.EntityType == sa.bindparam("entity_type"),
    rejected_table.c.EntityId.in_(sa.bindparam("entity_ids", expanding=True)),
)
