"""The fault-injection suite: a real HTTP receiver that misbehaves, a TCP proxy, hard kills.

Every test here is marked `fault`. Each records what it saw in a session ledger, and the run ends
with one summary line: scenarios run, records lost (must be 0), the most duplicates one hard kill
caused, records created twice at a receiver that takes the id from us (must be 0), and secrets found
in any output (must be 0).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.demo.seed import create_log_tables, seed_entity
from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.entity_sync import EntitySyncReport, sync_entity
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.engine.tables import tracking_table
from sync_pipeline.orchestration.sync_assets import delivery_policy, entity_plan
from sync_pipeline.resources.api_client import HttpSyncApiClient
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import DEFAULT_SETTINGS_PATH, Settings, parse_settings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC
from sync_pipeline_tests.real_db.conftest import fresh_databases

API_KEY = "fault-suite-key-7f3a9c"


@dataclass
class FaultLedger:
    """What the suite measured, for the closing summary line."""

    scenarios: list[str] = field(default_factory=list)
    records_lost: int = 0
    duplicates_per_kill: list[int] = field(default_factory=list)
    duplicate_creates: int = 0
    """Records a receiver that takes the id from us (Praxedo) was made to create a second time."""
    secrets_found: int = 0

    def search_for_secrets(self, outputs: Mapping[str, str], secrets: Iterable[str]) -> list[str]:
        """Where each secret appears in the outputs (by output name, the secret never quoted); each
        appearance counted in `secrets_found`."""
        searched = [secret for secret in secrets if secret]
        hits = [
            f"secret {n} in {name}"
            for name, text in outputs.items()
            for n, secret in enumerate(searched)
            if secret in text
        ]
        self.secrets_found += len(hits)
        return hits

    def summary(self) -> str:
        """The one line CI prints and the closing note quotes."""
        worst = max(self.duplicates_per_kill, default=0)
        return (
            f"fault suite: {len(self.scenarios)} scenarios run, {self.records_lost} records lost, "
            f"max duplicates per hard kill {worst} ({len(self.duplicates_per_kill)} kills), "
            f"{self.duplicate_creates} duplicate creates, {self.secrets_found} secrets found"
        )


_LEDGER = FaultLedger()


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> FaultLedger:
    """The session's ledger; the test's name is counted as a scenario."""
    _LEDGER.scenarios.append(request.node.name)
    return _LEDGER


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything in this folder is part of the fault suite."""
    for item in items:
        if "/fault/" in str(item.fspath):
            item.add_marker(pytest.mark.fault)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the ledger's summary line at the end of the run, when any fault test ran."""
    if _LEDGER.scenarios:
        terminalreporter.write_line(_LEDGER.summary())


@pytest.fixture
def receiver() -> Iterator[ReceivingApi]:
    """The real receiving API on 127.0.0.1."""
    with ReceivingApi(API_KEY) as api:
        yield api


@pytest.fixture
def pg_urls() -> Iterator[dict[str, str]]:
    """Fresh default and Log databases on the real local PostgreSQL."""
    with fresh_databases("postgresql", ("default_db", "ess_db", "log_db")) as urls:
        yield urls


def fault_settings(receiver: ReceivingApi, **overrides: Any) -> Settings:
    """Demo settings pointed at the receiver, with short timeouts and quick retries."""
    raw = yaml.safe_load(DEFAULT_SETTINGS_PATH.read_text())
    raw["api"].update(base_url=receiver.base_url, timeout_seconds=1)
    raw["retries"] = {"max_attempts": 4, "initial_delay_seconds": 0.01, "max_delay_seconds": 2}
    raw["locking"] = {"lease_seconds": 7, "wait_seconds": 15}  # > 4/3 x (1 s call + 2 x 2 s waits)
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_settings(raw)


def seed_users(urls: dict[str, str], count: int, settings: Settings) -> None:
    """`count` generated Users rows and empty Log tables."""
    engine = create_sync_engine(urls["default_db"])
    seed_entity(engine, ENTITIES_BY_NAME["Users"], settings.entities["Users"], count)
    engine.dispose()
    engine = create_sync_engine(urls["log_db"])
    create_log_tables(engine)
    engine.dispose()


def sync_users(urls: dict[str, str], settings: Settings, owner: str = "fault-test") -> EntitySyncReport:
    """One sync of Users through the engine with the real HTTP client, as the asset runs it."""
    api = HttpSyncApiClient(api_key=API_KEY, timeout_seconds=settings.api.timeout_seconds)
    source, log = create_sync_engine(urls["default_db"]), create_sync_engine(urls["log_db"])
    try:
        tracking = TrackingStore(log, SchedulerLogWriter(settings.scheduler_log.columns()))
        plan = entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME["Users"], settings)
        return sync_entity(plan, source, tracking, api, logging.getLogger("fault"), owner, delivery_policy(settings))
    finally:
        source.dispose()
        log.dispose()


def tracked_users(log_url: str) -> set[str]:
    """The Users EntityIds in TB_R_SYNC_TRACKING."""
    engine = create_sync_engine(log_url)
    with engine.connect() as conn:
        query = sa.select(tracking_table.c.EntityId).where(tracking_table.c.EntityType == "Users")
        ids = set(conn.execute(query).scalars())
    engine.dispose()
    return ids
