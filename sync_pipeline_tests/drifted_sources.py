"""Source tables as real deployments have them, not as the model declares them, and a sync over one.

MDM tables keep GUIDs as text, lack a unique key or allow NULL keys; these helpers build such a table
on any engine and run one entity's sync against it through the engine, as its asset would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.entity_sync import EntitySyncReport, sync_entity
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.engine.tables import source_table
from sync_pipeline.orchestration.sync_assets import delivery_policy, entity_plan
from sync_pipeline.settings import Settings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC

from .conftest import source_row
from .fakes import RecordingApiClient


def create_drifted_table(
    engine: sa.Engine, entity: str, settings: Settings, key_type: sa.types.TypeEngine[Any]
) -> sa.Table:
    """(Re)create the entity's source table with `key_type` as its key, no unique key, every column nullable."""
    model = source_table(ENTITIES_BY_NAME[entity], settings.entities[entity])
    key_column = settings.entities[entity].key_column
    table = sa.Table(
        model.name,
        sa.MetaData(),
        *(sa.Column(c.name, key_type if c.name == key_column else c.type, nullable=True) for c in model.columns),
    )
    with engine.begin() as conn:
        table.drop(conn, checkfirst=True)
        table.create(conn)
    return table


def insert_with_keys(engine: sa.Engine, table: sa.Table, entity: str, keys: Sequence[object]) -> None:
    """One generated row per key (row number = position), with the key exactly as given."""
    spec = ENTITIES_BY_NAME[entity]
    rows = [{**source_row(spec, number), "Id": key} for number, key in enumerate(keys)]
    with engine.begin() as conn:
        conn.execute(sa.insert(table), rows)


def sync_drifted(
    entity: str,
    settings: Settings,
    source: sa.Engine,
    log: sa.Engine,
    api: RecordingApiClient,
    dry_run: bool = False,
) -> EntitySyncReport:
    """Sync one entity from `source` into `log` and `api` through the engine (no Dagster)."""
    tracking = TrackingStore(log, SchedulerLogWriter(settings.scheduler_log.columns()))
    return sync_entity(
        entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME[entity], settings),
        source,
        tracking,
        api,
        logging.getLogger("sync_test"),
        owner="test-run",
        policy=delivery_policy(settings),
        dry_run=dry_run,
        sleep=lambda seconds: None,
    )
