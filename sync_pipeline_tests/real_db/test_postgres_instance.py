"""Production's Dagster instance: PostgreSQL storage and one run at a time from a dagster.yaml, the job run on it.

Runs once per source/Log backend (PostgreSQL, MariaDB); Dagster's own storage is always a fresh
PostgreSQL database, as in production.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from sync_pipeline.definitions import build_definitions
from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.engine.audit.log_queries import entity_summary
from sync_pipeline.orchestration.alerts import AlertSettings, AlertWebhook, build_alert_sensor
from sync_pipeline.orchestration.sync_assets import CHECK_NAME
from sync_pipeline.resources.database import SyncDatabase, create_sync_engine
from sync_pipeline.settings import Settings, parse_settings
from sync_pipeline.specs.tamhr import TAMHR_ENTITIES, TAMHR_SYNC
from sync_pipeline_tests.conftest import raw_default_settings
from sync_pipeline_tests.real_db.conftest import RealDatabases, fresh_databases, seed_sync_databases

pytestmark = pytest.mark.real_db

API_KEY = "postgres-instance-test-key"
ROWS = {"Users": 3500, "ActualOrg": 30, "ActualEntity": 20, "OrgObject": 10, "EventsCalendar": 5}
ASSETS = {spec.name: spec.asset_name for spec in TAMHR_ENTITIES}


@dataclass(frozen=True)
class DagsterHome:
    """A DAGSTER_HOME whose dagster.yaml keeps runs, events and schedules in PostgreSQL."""

    path: Path
    storage_url: str


@pytest.fixture
def dagster_home(tmp_path: Path) -> Iterator[DagsterHome]:
    """dagster.yaml as production writes it, pointing at a new, empty PostgreSQL database."""
    with fresh_databases("postgresql", ["dagster_db"]) as urls:
        # dagster-postgres needs psycopg2: SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, on which
        # dagster's `NOTIFY run_events, %(id)s` is a syntax error. Production's URL names the driver too.
        storage_url = sa.make_url(urls["dagster_db"]).set(drivername="postgresql+psycopg2").render_as_string(False)
        config = {
            "storage": {"postgres": {"postgres_url": storage_url}},
            "concurrency": {"runs": {"max_concurrent_runs": 1}},
            "telemetry": {"enabled": False},
        }
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        yield DagsterHome(tmp_path, storage_url)


@pytest.fixture
def receiver() -> Iterator[ReceivingApi]:
    with ReceivingApi(API_KEY) as api:
        yield api


@pytest.fixture
def settings(receiver: ReceivingApi) -> Settings:
    """The packaged settings pointed at the receiver, with quick retries."""
    raw = raw_default_settings()
    raw["api"]["base_url"] = receiver.base_url
    raw["retries"] = {"max_attempts": 2, "initial_delay_seconds": 0.01, "max_delay_seconds": 0.05}
    return parse_settings(raw)


@pytest.fixture
def seeded(real_databases: RealDatabases, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> RealDatabases:
    """Source rows in default/ess, empty Log tables, and the environment the resources read."""
    seed_sync_databases(real_databases.urls, settings, ROWS, API_KEY, monkeypatch)
    return real_databases


def run_job(instance: dg.DagsterInstance, settings: Settings) -> dg.ExecuteInProcessResult:
    """The code location's own job, with its own resources (from the environment), on `instance`."""
    job = build_definitions(settings).resolve_job_def(TAMHR_SYNC.job_name)
    return job.execute_in_process(instance=instance, raise_on_error=False)


def test_the_sync_job_runs_on_a_postgresql_instance_and_its_events_are_read_back_from_it(
    dagster_home: DagsterHome, seeded: RealDatabases, settings: Settings, receiver: ReceivingApi
) -> None:
    with dg.DagsterInstance.from_config(str(dagster_home.path)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        run_queue = instance.get_concurrency_config().run_queue_config
        assert run_queue is not None and run_queue.max_concurrent_runs == 1
        run_id = run_job(instance, settings).run_id

    with dg.DagsterInstance.from_config(str(dagster_home.path)) as reloaded:
        record = reloaded.get_run_record_by_id(run_id)
        events = reloaded.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        checks = {
            name: reloaded.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(dg.AssetKey(asset), CHECK_NAME))
            for name, asset in ASSETS.items()
        }

    assert record is not None and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    sent = {}
    for event in events:
        materialization = event.event_log_entry.asset_materialization
        assert materialization is not None
        sent[materialization.asset_key.to_user_string()] = materialization.metadata["sent"].value
    assert sent == {ASSETS[name]: rows for name, rows in ROWS.items()}
    verdicts = {
        name: (check.run_id, check.evaluation.passed if check.evaluation else None) if check else None
        for name, check in checks.items()
    }
    assert verdicts == {name: (run_id, True) for name in ASSETS}
    assert receiver.log.received("users") == ROWS["Users"]
    storage = sa.create_engine(dagster_home.storage_url)
    with storage.connect() as conn:
        stored_runs = conn.execute(sa.text("SELECT run_id FROM runs")).scalars().all()
        stored_materializations = conn.execute(
            sa.text("SELECT COUNT(*) FROM event_logs WHERE run_id = :run AND dagster_event_type = :type"),
            {"run": run_id, "type": "ASSET_MATERIALIZATION"},
        ).scalar_one()
    storage.dispose()
    assert (stored_runs, stored_materializations) == ([run_id], len(ASSETS))


def test_the_alert_sensor_reads_a_failing_check_from_postgresql_storage(
    dagster_home: DagsterHome, seeded: RealDatabases, settings: Settings, receiver: ReceivingApi
) -> None:
    receiver.fail_calls("users", {number: 503 for number in range(2, 10)})  # the second batch never gets through
    alert_settings = AlertSettings(consecutive_failures=1, failed_call_ratio=0.99)
    sensor = build_alert_sensor(alert_settings, TAMHR_SYNC)
    resources = {"log_db": SyncDatabase(url=seeded.urls["log_db"]), "alert_webhook": AlertWebhook()}

    with dg.DagsterInstance.from_config(str(dagster_home.path)) as instance:
        run_id = run_job(instance, settings).run_id
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            cursor = sensor.evaluate_tick(context).cursor

    active = json.loads(cursor or "{}")["active"]
    assert sorted(active) == ["check_failing:users", "run_failed:tamhr_sync_job"], "the incomplete run failed too"
    assert (active["check_failing:users"]["run_id"], active["check_failing:users"]["counts"]["failed"]) == (run_id, 500)
    run_failed = active["run_failed:tamhr_sync_job"]
    assert (run_failed["run_id"], run_failed["entity"]) == (run_id, "Users")  # not EventsCalendar, which failed the run
    log_engine = create_sync_engine(seeded.urls["log_db"])
    summary = entity_summary(log_engine, "Users")
    log_engine.dispose()
    assert (summary["calls"], summary["failed_calls"], summary["rejected_records"]) == (3, 2, 0)
    assert summary["last_success_utc"] is not None
