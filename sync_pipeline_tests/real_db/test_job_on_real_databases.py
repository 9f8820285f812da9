"""The whole job against real PostgreSQL / MariaDB databases and a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from sync_pipeline.definitions import build_definitions
from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.engine.tables import scheduler_log_table, tracking_table
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import DEFAULT_SETTINGS_PATH, Settings, parse_settings
from sync_pipeline.specs.tamhr import DATABASE_URL_ENV_VARS, TAMHR_SYNC
from sync_pipeline_tests.real_db.conftest import RealDatabases, seed_sync_databases

pytestmark = pytest.mark.real_db

API_KEY = "integration-test-key"
ROWS = {"Users": 7000, "ActualOrg": 120, "ActualEntity": 80, "OrgObject": 3001, "EventsCalendar": 40}
CANONICAL_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CLOSED_PORT_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
    "mariadb": "mysql+pymysql://root@127.0.0.1:1/nowhere",
}


@pytest.fixture
def receiver() -> Iterator[ReceivingApi]:
    with ReceivingApi(API_KEY) as api:
        yield api


def settings_for(receiver: ReceivingApi, **entity_overrides: dict[str, object]) -> Settings:
    raw = yaml.safe_load(DEFAULT_SETTINGS_PATH.read_text())
    raw["api"]["base_url"] = receiver.base_url
    raw["retries"] = {"max_attempts": 3, "initial_delay_seconds": 0.01, "max_delay_seconds": 0.05}
    for entity, override in entity_overrides.items():
        raw["entities"][entity].update(override)
    return parse_settings(raw)


@pytest.fixture
def seeded(real_databases: RealDatabases, receiver: ReceivingApi, monkeypatch: pytest.MonkeyPatch) -> RealDatabases:
    """Source rows in default/ess, empty Log tables, and the env vars the resources read."""
    settings = settings_for(receiver)
    seed_sync_databases(real_databases.urls, settings, ROWS, API_KEY, monkeypatch)
    return real_databases


def run_job(settings: Settings) -> dg.ExecuteInProcessResult:
    defs = build_definitions(settings)
    return defs.resolve_job_def(TAMHR_SYNC.job_name).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def check_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {ev.asset_check_key.asset_key.to_user_string(): ev.passed for ev in result.get_asset_check_evaluations()}


def sent_per_asset(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    return {
        ev.materialization.asset_key.to_user_string(): int(ev.materialization.metadata["sent"].value)
        for ev in result.get_asset_materialization_events()
    }


def tracked_ids(urls: dict[str, str], entity: str) -> list[str]:
    engine = create_sync_engine(urls["log_db"])
    with engine.connect() as conn:
        ids = conn.execute(sa.select(tracking_table.c.EntityId).where(tracking_table.c.EntityType == entity)).scalars()
        result = list(ids)
    engine.dispose()
    return result


def scheduler_log(urls: dict[str, str], entity: str) -> list[dict[str, object]]:
    engine = create_sync_engine(urls["log_db"])
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(scheduler_log_table).where(scheduler_log_table.c.Activity == f"Sync Batch: {entity}")
        ).mappings()
        result = [dict(row) for row in rows]
    engine.dispose()
    return result


def test_failed_batch_is_logged_left_untracked_and_sent_once_on_the_next_run(
    seeded: RealDatabases, receiver: ReceivingApi
) -> None:
    settings = settings_for(receiver)
    receiver.fail_calls("users", {2: 500, 3: 503, 4: 500})

    first = run_job(settings)

    assert not first.success, "an incomplete sync fails the run once every entity ran"
    assert receiver.log.calls("users") == [3000, 3000, 3000, 3000, 1000]  # batch 2 tried 3 times
    assert len(set(receiver.log.idempotency_keys["users"][1:4])) == 1
    assert receiver.log.received("users") == 4000
    assert check_outcomes(first) == {
        "users": False,
        "actual_org": True,
        "actual_entity": True,
        "org_object": True,
        "events_calendar": True,
    }
    assert sent_per_asset(first) == {
        "users": 4000,
        "actual_org": 120,
        "actual_entity": 80,
        "org_object": 3001,
        "events_calendar": 40,
    }
    tracked = tracked_ids(seeded.urls, "Users")
    assert len(tracked) == 4000 and all(CANONICAL_GUID.match(entity_id) for entity_id in tracked)
    assert set(tracked) == set(receiver.log.ids["users"])
    log_rows = scheduler_log(seeded.urls, "Users")
    assert sorted(str(row["Status"]) for row in log_rows) == ["Failure"] * 3 + ["Success"] * 2
    failure = next(
        row for row in log_rows if row["Status"] == "Failure" and 'Attempt": 1' in str(row["AdditionalInformation"])
    )
    details = json.loads(str(failure["AdditionalInformation"]))
    assert details["HttpResponseCode"] == 500 and details["BatchSize"] == 3000
    assert details["EndpointUrl"] == f"{receiver.base_url}users"
    assert "HTTP 500" in str(failure["ExceptionMessage"])

    second = run_job(settings)

    assert all(check_outcomes(second).values())
    assert sent_per_asset(second) == {
        "users": 3000,
        "actual_org": 0,
        "actual_entity": 0,
        "org_object": 0,
        "events_calendar": 0,
    }
    assert receiver.log.received("users") == 7000 and receiver.log.duplicates("users") == 0
    assert len(tracked_ids(seeded.urls, "Users")) == 7000

    calls_before_third_run = {endpoint: len(sizes) for endpoint, sizes in receiver.log.call_sizes.items()}
    third = run_job(settings)

    assert set(sent_per_asset(third).values()) == {0}
    assert {endpoint: len(sizes) for endpoint, sizes in receiver.log.call_sizes.items()} == calls_before_third_run


def test_unreachable_source_database_fails_that_entity_and_the_others_still_run(
    seeded: RealDatabases, receiver: ReceivingApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV_VARS["ess_db"], CLOSED_PORT_URLS[seeded.backend])

    result = run_job(settings_for(receiver))

    assert check_outcomes(result) == {
        "users": True,
        "actual_org": True,
        "actual_entity": True,
        "org_object": True,
        "events_calendar": False,
    }
    evaluation = next(ev for ev in result.get_asset_check_evaluations() if not ev.passed)
    assert "cannot read TB_M_EVENTS_CALENDAR" in str(evaluation.description)
    assert receiver.log.received("events-calendar") == 0
    assert tracked_ids(seeded.urls, "EventsCalendar") == []


def test_unreachable_endpoint_stops_that_entity_after_its_logged_attempts_and_the_rest_go_on(
    seeded: RealDatabases, receiver: ReceivingApi
) -> None:
    settings = settings_for(receiver, ActualOrg={"endpoint": "http://127.0.0.1:1/api/sync/actual-org"})

    result = run_job(settings)

    assert check_outcomes(result)["actual_org"] is False
    assert [outcome for asset, outcome in check_outcomes(result).items() if asset != "actual_org"] == [True] * 4
    log_rows = scheduler_log(seeded.urls, "ActualOrg")
    assert [row["Status"] for row in log_rows] == ["Failure"] * 3
    assert all("endpoint unreachable" in str(row["ExceptionMessage"]) for row in log_rows)
    assert tracked_ids(seeded.urls, "ActualOrg") == []
    assert receiver.log.received("organization-objects") == 3001


def test_source_keys_and_tracking_ids_agree_whatever_form_the_driver_returns(
    seeded: RealDatabases, receiver: ReceivingApi
) -> None:
    run_job(settings_for(receiver))

    sent_ids = set(receiver.log.ids["actual-entity-structures"])
    assert len(sent_ids) == ROWS["ActualEntity"] and all(CANONICAL_GUID.match(entity_id) for entity_id in sent_ids)
    assert set(tracked_ids(seeded.urls, "ActualEntity")) == sent_ids
