"""TB_R_SYNC_TRACKING written and read on the real servers, through each dialect's fast path."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.audit.scheduler_log import ApiCall, SchedulerLogWriter
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.engine.tables import tracking_table
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import load_settings
from sync_pipeline_tests.conftest import SettingsFactory
from sync_pipeline_tests.drifted_sources import create_drifted_table, insert_with_keys, sync_drifted
from sync_pipeline_tests.fakes import RecordingApiClient
from sync_pipeline_tests.real_db.conftest import RealDatabases

pytestmark = pytest.mark.real_db


def test_text_ids_that_copy_would_misread_are_tracked_exactly_and_found_again(real_databases: RealDatabases) -> None:
    """PostgreSQL's COPY text format gives tab, newline, carriage return and backslash a meaning."""
    engine = create_sync_engine(real_databases.urls["log_db"])
    create_log_tables(engine)
    store = TrackingStore(engine, SchedulerLogWriter(load_settings().scheduler_log.columns()))
    ids = ["tab\there", "back\\slash", "new\nline", "carriage\rreturn", "\\N", "plain"]

    store.record_delivered("ActualOrg", ids, ApiCall("http://127.0.0.1/api/sync/org", len(ids), 200, 5))

    with engine.connect() as conn:
        stored = conn.execute(sa.select(tracking_table.c.EntityId)).scalars().all()
    assert sorted(stored) == sorted(ids)
    assert store.tracked_among("ActualOrg", [*ids, "absent"]) == set(ids)
    assert store.tracked_ids("ActualOrg").among([*ids, "absent", "plain "]) == set(ids)
    engine.dispose()


def test_half_of_4000_mixed_case_guid_keys_tracked_sends_exactly_the_other_half(
    real_databases: RealDatabases, make_settings: SettingsFactory
) -> None:
    """The run's snapshot of tracked IDs must agree with the table row for row, on every server."""
    settings = make_settings(batch_size=500)
    source = create_sync_engine(real_databases.urls["default_db"])
    log = create_sync_engine(real_databases.urls["log_db"])
    create_log_tables(log)
    canonical = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"users/{n}")) for n in range(4000)]
    keys = [key.upper() if n % 3 == 0 else key for n, key in enumerate(canonical)]
    insert_with_keys(source, create_drifted_table(source, "Users", settings, sa.String(36)), "Users", keys)
    tracked = canonical[::2]
    with log.begin() as conn:
        conn.execute(sa.insert(tracking_table), [tracking_row("Users", entity_id) for entity_id in tracked])
    api = RecordingApiClient()

    report = sync_drifted("Users", settings, source, log, api)

    assert report.stopped_because is None, report.stopped_because
    assert sorted(api.accepted_ids(settings.endpoint_url("Users"))) == sorted(canonical[1::2])
    assert (report.rows_found, report.already_tracked, report.sent) == (4000, 2000, 2000)
    with log.connect() as conn:
        stored = conn.execute(sa.select(tracking_table.c.EntityId)).scalars().all()
    assert sorted(stored) == sorted(canonical)
    source.dispose()
    log.dispose()


def tracking_row(entity: str, entity_id: str) -> dict[str, object]:
    """A tracking row as an earlier run left it."""
    return {"EntityType": entity, "EntityId": entity_id, "SyncTimestamp": dt.datetime(2024, 6, 1, 3, 0)}
