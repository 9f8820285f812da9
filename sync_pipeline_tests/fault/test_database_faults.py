"""The Log and source databases failing at the worst moments, on the real PostgreSQL."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_pipeline.definitions import build_definitions
from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.demo.seed import seed_entity
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.specs.tamhr import API_KEY_ENV_VAR, DATABASE_URL_ENV_VARS, TAMHR_ENTITIES, TAMHR_SYNC
from sync_pipeline_tests.fault.conftest import (
    API_KEY,
    FaultLedger,
    fault_settings,
    seed_users,
    sync_users,
    tracked_users,
)
from sync_pipeline_tests.fault.tcp_proxy import TcpProxy

ROWS = 2500
BATCH = 1000


def through(proxy: TcpProxy, url: str) -> str:
    """The same database URL, reached through the proxy."""
    return sa.make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def test_an_unreachable_log_database_at_start_sends_nothing_and_says_why(
    receiver: ReceivingApi, pg_urls: dict[str, str], ledger: FaultLedger
) -> None:
    settings = fault_settings(receiver, batch_size=BATCH)
    seed_users(pg_urls, ROWS, settings)

    report = sync_users({**pg_urls, "log_db": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"}, settings)

    assert report.stopped_because is not None and "cannot take the lock of Users" in report.stopped_because
    assert receiver.log.calls("users") == []
    assert (report.sent, report.rows_found) == (0, 0)


def test_a_slow_log_database_still_tracks_every_record_exactly_once(
    receiver: ReceivingApi, pg_urls: dict[str, str], ledger: FaultLedger
) -> None:
    settings = fault_settings(receiver, batch_size=BATCH)
    seed_users(pg_urls, ROWS, settings)
    with TcpProxy("127.0.0.1", 5432, latency_seconds=0.02) as proxy:
        report = sync_users({**pg_urls, "log_db": through(proxy, pg_urls["log_db"])}, settings)

    ledger.records_lost += ROWS - receiver.log.received("users")
    assert report.succeeded and report.sent == ROWS
    assert receiver.log.duplicates("users") == 0
    assert len(tracked_users(pg_urls["log_db"])) == ROWS


def test_a_log_database_lost_after_a_2xx_reports_delivered_but_untracked_and_resends_with_the_same_key(
    receiver: ReceivingApi, pg_urls: dict[str, str], ledger: FaultLedger
) -> None:
    settings = fault_settings(receiver, batch_size=BATCH)
    seed_users(pg_urls, ROWS, settings)
    with TcpProxy("127.0.0.1", 5432) as proxy:
        urls = {**pg_urls, "log_db": through(proxy, pg_urls["log_db"])}
        receiver.log.before_answering = lambda endpoint, number: proxy.cut() if number == 2 else None

        first = sync_users(urls, settings)
        proxy.restore()
        receiver.log.before_answering = None
        second = sync_users(urls, settings)

    keys = receiver.log.idempotency_keys["users"]
    ledger.records_lost += ROWS - receiver.log.received("users")
    assert first.delivered_untracked == BATCH and first.stopped_because is not None
    assert "delivered but could not be tracked" in first.stopped_because
    assert (first.sent, second.sent) == (BATCH, ROWS - BATCH)
    assert keys[2] == keys[1], "the resent batch carries the Idempotency-Key of the delivered one"
    assert receiver.log.duplicates("users") == BATCH
    assert len(tracked_users(pg_urls["log_db"])) == ROWS == receiver.log.received("users")


def test_a_source_database_lost_mid_stream_fails_that_entity_and_the_others_run(
    receiver: ReceivingApi, pg_urls: dict[str, str], ledger: FaultLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fault_settings(receiver, batch_size=BATCH)
    for spec in TAMHR_ENTITIES:
        engine = create_sync_engine(pg_urls[spec.source_db])
        seed_entity(engine, spec, settings.entities[spec.name], ROWS if spec.name == "Users" else 50)
        engine.dispose()
    seed_users(pg_urls, 0, settings)
    database = sa.make_url(pg_urls["default_db"]).database
    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")

    def terminate_source_backends(endpoint: str, number: int) -> None:
        if (endpoint, number) == ("users", 1):
            with admin.connect() as conn:
                conn.execute(
                    sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db"),
                    {"db": database},
                )

    receiver.log.before_answering = terminate_source_backends
    for key, env_var in DATABASE_URL_ENV_VARS.items():
        monkeypatch.setenv(env_var, pg_urls[key])
    monkeypatch.setenv(API_KEY_ENV_VAR, API_KEY)

    result = (
        build_definitions(settings)
        .resolve_job_def(TAMHR_SYNC.job_name)
        .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    )
    admin.dispose()

    checks = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert not checks["users"].passed
    assert "cannot read TB_M_USER" in str(checks["users"].description)
    assert [name for name, check in checks.items() if check.passed] == [
        "actual_org",
        "actual_entity",
        "org_object",
        "events_calendar",
    ]
    # The next page may already have been read while batch 1 was posted; the one after is not.
    assert BATCH <= receiver.log.received("users") < ROWS
    assert receiver.log.received("organization-objects") == 50
