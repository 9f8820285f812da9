"""Several batches in flight against a slow real receiver: tracking and logging stay exact.

The speed-up itself is a benchmark figure (sync_pipeline_tests/benchmarks), not a timed test.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest

from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.entity_sync import EntitySyncReport, sync_entity
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.orchestration.sync_assets import delivery_policy, entity_plan
from sync_pipeline.resources.api_client import HttpSyncApiClient
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC

from .conftest import SettingsFactory, SyncDatabases

API_KEY = "in-flight-test-key"
ROWS = 600
BATCH = 25
SECONDS_PER_CALL = 0.05


@pytest.fixture
def slow_receiver() -> Iterator[ReceivingApi]:
    """The real receiver, taking 50 ms to answer every call."""
    with ReceivingApi(API_KEY) as receiver:
        receiver.log.before_answering = lambda endpoint, number: time.sleep(SECONDS_PER_CALL)
        yield receiver


def sync_with(
    in_flight: int, receiver: ReceivingApi, databases: SyncDatabases, make_settings: SettingsFactory
) -> EntitySyncReport:
    settings = make_settings(batch_size=BATCH)
    settings = settings.model_copy(
        update={"api": settings.api.model_copy(update={"base_url": receiver.base_url, "max_in_flight": in_flight})}
    )
    tracking = TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns()))
    return sync_entity(
        entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME["Users"], settings),
        databases.source_engine("Users"),
        tracking,
        HttpSyncApiClient(api_key=API_KEY),
        logging.getLogger("in_flight"),
        owner="in-flight-test",
        policy=delivery_policy(settings),
    )


def test_four_batches_in_flight_track_and_log_every_call_exactly_once(
    slow_receiver: ReceivingApi, databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    databases.insert_rows("Users", ROWS)

    report = sync_with(4, slow_receiver, databases, make_settings)

    assert report.succeeded and report.sent == ROWS
    assert slow_receiver.log.received("users") == ROWS and slow_receiver.log.duplicates("users") == 0
    assert sorted(row["EntityId"] for row in databases.tracking_rows()) == sorted(slow_receiver.log.ids["users"])
    log_rows = databases.scheduler_log_rows()
    assert len(log_rows) == ROWS // BATCH == len(slow_receiver.log.calls("users"))
    assert {row["Status"] for row in log_rows} == {"Success"}
    assert sum(json.loads(row["AdditionalInformation"])["BatchSize"] for row in log_rows) == ROWS
