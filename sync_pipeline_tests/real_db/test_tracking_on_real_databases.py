"""TB_R_SYNC_TRACKING written and read on the real servers, through each dialect's fast path."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.scheduler_log import ApiCall, SchedulerLogWriter
from sync_pipeline.engine.tracking import TrackingStore
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import load_settings
from sync_pipeline.tables import tracking_table
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
    engine.dispose()
