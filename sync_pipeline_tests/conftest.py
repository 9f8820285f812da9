"""Shared fixtures: three real SQLite databases (default, ESS, Log), deterministic rows and settings."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.entity_sync import EntitySyncReport, sync_entity
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.engine.tables import log_metadata, rejected_table, scheduler_log_table, source_table, tracking_table
from sync_pipeline.orchestration.sync_assets import delivery_policy, entity_plan
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import DEFAULT_SETTINGS_PATH, Settings, parse_settings
from sync_pipeline.specs.model import EntitySpec, Field, FieldType
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_ENTITIES, TAMHR_SYNC

from .fakes import RecordingApiClient

ID_NAMESPACE = uuid.UUID("6f1c2a4e-0d3b-4c5e-9a7f-1b2c3d4e5f60")
DATABASE_KEYS = ("default_db", "ess_db", "log_db")

SettingsFactory = Callable[..., Settings]
EntitySync = Callable[..., EntitySyncReport]


def raw_default_settings() -> dict[str, Any]:
    """The packaged default settings file, parsed but not validated, for a test to change."""
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_SETTINGS_PATH.read_text(encoding="utf-8"))
    return raw


def entity_id(spec: EntitySpec, number: int) -> uuid.UUID:
    """The GUID of row `number` of an entity: the same in every run."""
    return uuid.uuid5(ID_NAMESPACE, f"{spec.name}/{number}")


def field_value(spec: EntitySpec, field: Field, number: int) -> object:
    """A plausible value of `field` for row `number`, chosen by the field's type."""
    if field.type is FieldType.GUID:
        return entity_id(spec, number)
    if field.type is FieldType.TEXT:
        text = f"{field.name} {number}"
        return text[: field.length] if field.length else text
    if field.type is FieldType.INT:
        return number % 7
    if field.type is FieldType.DECIMAL:
        return decimal.Decimal(number % 100) + decimal.Decimal("0.25")
    if field.type is FieldType.DATETIME:
        return dt.datetime(2024, 1, 1, 8, 30) + dt.timedelta(days=number, microseconds=125_000)
    return number % 2 == 0


def source_row(spec: EntitySpec, number: int) -> dict[str, object]:
    """Row `number` of an entity's source table, every field filled."""
    return {field.name: field_value(spec, field, number) for field in spec.fields}


@dataclass
class SyncDatabases:
    """One test's default, ESS and Log databases: real SQLite files with the real tables."""

    urls: dict[str, str]
    engines: dict[str, sa.Engine]
    source_tables: dict[str, sa.Table]

    def source_engine(self, entity: str) -> sa.Engine:
        """The engine of the database the entity is read from."""
        return self.engines[ENTITIES_BY_NAME[entity].source_db]

    @property
    def log(self) -> sa.Engine:
        """The Log database's engine."""
        return self.engines["log_db"]

    def insert_rows(self, entity: str, count: int, start: int = 0) -> list[dict[str, object]]:
        """Insert rows `start` .. `start + count - 1` of the entity and return them."""
        spec = ENTITIES_BY_NAME[entity]
        rows = [source_row(spec, number) for number in range(start, start + count)]
        with self.source_engine(entity).begin() as conn:
            conn.execute(sa.insert(self.source_tables[entity]), rows)
        return rows

    def track(self, entity: str, entity_ids: list[str]) -> None:
        """Pre-insert tracking rows, as an earlier run would have left them."""
        now = dt.datetime(2024, 6, 1, 3, 0)
        rows = [{"EntityType": entity, "EntityId": eid, "SyncTimestamp": now} for eid in entity_ids]
        with self.log.begin() as conn:
            conn.execute(sa.insert(tracking_table), rows)

    def tracking_rows(self) -> list[sa.RowMapping]:
        """Every TB_R_SYNC_TRACKING row, in insertion order."""
        with self.log.connect() as conn:
            return list(conn.execute(sa.select(tracking_table).order_by(tracking_table.c.Id)).mappings())

    def tracked_ids(self, entity: str) -> set[str]:
        """The EntityIds tracked for `entity`."""
        return {row["EntityId"] for row in self.tracking_rows() if row["EntityType"] == entity}

    def scheduler_log_rows(self) -> list[sa.RowMapping]:
        """Every SchedulerLog row, oldest first."""
        with self.log.connect() as conn:
            query = sa.select(scheduler_log_table).order_by(scheduler_log_table.c.CreatedOn)
            return list(conn.execute(query).mappings())

    def rejected_rows(self) -> list[sa.RowMapping]:
        """Every TB_R_SYNC_REJECTED row, in insertion order."""
        with self.log.connect() as conn:
            return list(conn.execute(sa.select(rejected_table).order_by(rejected_table.c.Id)).mappings())


@pytest.fixture
def make_settings() -> SettingsFactory:
    """Settings from the packaged defaults, with a batch size and per-entity overrides."""

    def build(
        batch_size: int = 3000,
        scheduler_log: dict[str, str] | None = None,
        retries: dict[str, Any] | None = None,
        **entities: dict[str, Any],
    ) -> Settings:
        raw = raw_default_settings()
        raw["batch_size"] = batch_size
        raw["retries"] = {
            "max_attempts": 3,
            "initial_delay_seconds": 0.01,
            "max_delay_seconds": 0.05,
            **(retries or {}),
        }
        raw["scheduler_log"].update(scheduler_log or {})
        for name, overrides in entities.items():
            raw["entities"][name].update(overrides)
        return parse_settings(raw, source="test settings")

    return build


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    """The packaged default settings with a batch size of 3 so a handful of rows makes batches."""
    return make_settings(batch_size=3)


@pytest.fixture
def databases(tmp_path: Path, settings: Settings) -> Iterator[SyncDatabases]:
    """Three empty SQLite databases: the source tables in default/ESS, the Log tables in log."""
    urls = {key: f"sqlite:///{tmp_path}/{key.removesuffix('_db')}.db" for key in DATABASE_KEYS}
    engines = {key: create_sync_engine(url) for key, url in urls.items()}
    log_metadata.create_all(engines["log_db"])
    tables: dict[str, sa.Table] = {}
    for spec in TAMHR_ENTITIES:
        metadata = sa.MetaData()
        tables[spec.name] = source_table(spec, settings.entities[spec.name], metadata)
        metadata.create_all(engines[spec.source_db])
    yield SyncDatabases(urls, engines, tables)
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def api() -> RecordingApiClient:
    """A fake API that accepts everything."""
    return RecordingApiClient()


@pytest.fixture
def waits() -> list[float]:
    """The backoff waits a sync asked for, in order (tests do not really sleep)."""
    return []


@pytest.fixture
def run_sync(databases: SyncDatabases, settings: Settings, api: RecordingApiClient, waits: list[float]) -> EntitySync:
    """Sync one entity through the engine, as its asset would, with the test's databases and API."""

    def run(entity: str, settings: Settings = settings, api: RecordingApiClient = api) -> EntitySyncReport:
        plan = entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME[entity], settings)
        tracking = TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns()))
        return sync_entity(
            plan,
            databases.source_engine(entity),
            tracking,
            api,
            logging.getLogger("sync_test"),
            owner="test-run",
            policy=delivery_policy(settings),
            sleep=waits.append,
        )

    return run
