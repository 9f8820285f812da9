"""The Log database refusing writes on the real servers: every failure stops the entity cleanly.

PostgreSQL's tracking rows go in through COPY on the raw psycopg cursor, whose errors are not
SQLAlchemy's; MariaDB's through an executemany. Both must end as `delivered_untracked`.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.audit.scheduler_log import ApiCall, SchedulerLogWriter
from sync_pipeline.engine.state.tracking import DeliveredButUntracked, TrackingStore
from sync_pipeline.engine.tables import lock_table
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import load_settings
from sync_pipeline_tests.fault.conftest import API_KEY, fault_settings, seed_users, sync_users, tracked_users
from sync_pipeline_tests.real_db.conftest import RealDatabases

pytestmark = pytest.mark.real_db

ROWS = 25
BATCH = 10
REFUSE_TRACKING = {
    "postgresql": [
        "CREATE FUNCTION refuse_tracking() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'tracking refused'; END $$ "
        "LANGUAGE plpgsql",
        'CREATE TRIGGER refuse_tracking BEFORE INSERT ON "TB_R_SYNC_TRACKING" FOR EACH ROW '
        "EXECUTE FUNCTION refuse_tracking()",
    ],
    "mariadb": [
        "CREATE TRIGGER refuse_tracking BEFORE INSERT ON TB_R_SYNC_TRACKING FOR EACH ROW "
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'tracking refused'"
    ],
}
ALLOW_TRACKING = {
    "postgresql": 'DROP TRIGGER refuse_tracking ON "TB_R_SYNC_TRACKING"',
    "mariadb": "DROP TRIGGER refuse_tracking",
}


def execute(url: str, *statements: str) -> None:
    """Run DDL on the database at `url`."""
    engine = create_sync_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))
    engine.dispose()


def test_a_unique_violation_while_tracking_a_delivered_batch_is_delivered_but_untracked(
    real_databases: RealDatabases,
) -> None:
    engine = create_sync_engine(real_databases.urls["log_db"])
    create_log_tables(engine)
    store = TrackingStore(engine, SchedulerLogWriter(load_settings().scheduler_log.columns()))
    call = ApiCall("http://127.0.0.1/api/sync/users", 2, 200, 5)
    store.record_delivered("Users", ["already-tracked"], call)

    with pytest.raises(DeliveredButUntracked) as untracked:
        store.record_delivered("Users", ["new-one", "already-tracked"], call)

    assert untracked.value.count == 2 and "delivered but could not be tracked" in str(untracked.value)
    assert "duplicate" in str(untracked.value).lower()
    assert store.tracked_among("Users", ["new-one", "already-tracked"]) == {"already-tracked"}
    engine.dispose()


def test_a_tracking_write_refused_after_a_2xx_stops_the_entity_and_resends_with_the_same_key(
    real_databases: RealDatabases,
) -> None:
    urls = real_databases.urls
    with ReceivingApi(API_KEY) as receiver:
        settings = fault_settings(receiver, batch_size=BATCH)
        seed_users(urls, ROWS, settings)
        execute(urls["log_db"], *REFUSE_TRACKING[real_databases.backend])

        first = sync_users(urls, settings)
        execute(urls["log_db"], ALLOW_TRACKING[real_databases.backend])
        second = sync_users(urls, settings)

        keys = receiver.log.idempotency_keys["users"]
        assert first.delivered_untracked == BATCH and first.stopped_because is not None
        assert "delivered but could not be tracked" in first.stopped_because
        assert "tracking refused" in first.stopped_because
        assert receiver.log.calls("users") == [BATCH, BATCH, BATCH, ROWS - 2 * BATCH]
        assert keys[1] == keys[0], "the resent batch carries the Idempotency-Key of the delivered one"
        assert second.succeeded and second.sent == ROWS
        assert len(tracked_users(urls["log_db"])) == ROWS


def test_a_missing_lock_table_is_named_with_the_command_that_creates_it(real_databases: RealDatabases) -> None:
    urls = real_databases.urls
    with ReceivingApi(API_KEY) as receiver:
        settings = fault_settings(receiver, batch_size=BATCH)
        seed_users(urls, ROWS, settings)
        engine = create_sync_engine(urls["log_db"])
        lock_table.drop(engine)
        engine.dispose()

        report = sync_users(urls, settings)

        dialect = {"postgresql": "postgresql", "mariadb": "mysql"}[real_databases.backend]
        assert report.stopped_because is not None
        assert "Log table TB_R_SYNC_LOCK does not exist in the Log database" in report.stopped_because
        assert f"`sync-pipeline ddl {dialect}`" in report.stopped_because
        assert receiver.log.calls("users") == []
