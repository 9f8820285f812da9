"""The per-record sink with its Log database on the real servers: each one's row hash upsert in the
transaction of the call's SchedulerLog row, against the real receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.real_db.conftest import RealDatabases
from sync_pipeline_tests.record_sink_scenarios import API_KEY, created_updated_and_refused_work_orders

pytestmark = pytest.mark.real_db


@pytest.fixture
def log_db(real_databases: RealDatabases) -> Iterator[sa.Engine]:
    """A fresh Log database on the server under test, every Log table created."""
    engine = create_sync_engine(real_databases.urls["log_db"])
    create_log_tables(engine)
    yield engine
    engine.dispose()


def test_work_orders_are_created_updated_and_refused_on_the_real_server_as_on_sqlite(log_db: sa.Engine) -> None:
    with ReceivingApi(API_KEY) as receiver:
        created_updated_and_refused_work_orders(log_db, receiver)
