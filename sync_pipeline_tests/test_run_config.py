"""Dry runs (their own job) and operator resends (run config of an asset), as the README shows them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from sync_pipeline.definitions import build_definitions
from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.orchestration.dry_run_job import build_dry_run_job
from sync_pipeline.orchestration.sync_assets import CHECK_NAME, DRY_RUN_TAG, build_entity_assets
from sync_pipeline.resources.api_client import HttpSyncApiClient
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import Settings
from sync_pipeline.specs.tamhr import API_KEY_ENV_VAR, DATABASE_URL_ENV_VARS, TAMHR_ENTITIES, TAMHR_SYNC

from .conftest import SettingsFactory, SyncDatabases
from .fakes import RecordingApiClient

API_KEY = "run-config-test-key"
USERS_URL_PATH = "users"


@pytest.fixture
def receiver() -> Iterator[ReceivingApi]:
    with ReceivingApi(API_KEY) as api:
        yield api


@pytest.fixture
def live_settings(receiver: ReceivingApi, make_settings: SettingsFactory) -> Settings:
    settings = make_settings(batch_size=4)
    return settings.model_copy(update={"api": settings.api.model_copy(update={"base_url": receiver.base_url})})


def materialize(
    databases: SyncDatabases, settings: Settings, config: dict[str, Any], selection: list[str] | None = None
) -> dg.ExecuteInProcessResult:
    resources = {key: SyncDatabase(url=url) for key, url in databases.urls.items()}
    resources["sync_api"] = HttpSyncApiClient(api_key=API_KEY)
    return dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings),
        resources=resources,
        run_config={"ops": config},
        selection=selection,
        raise_on_error=False,
    )


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset]
    return {name: entry.value for name, entry in event.materialization.metadata.items()}


def dry_run(
    databases: SyncDatabases,
    settings: Settings,
    config: dict[str, Any] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """The dry-run job over the test's databases and the live receiver."""
    resources: dict[str, Any] = {key: SyncDatabase(url=url) for key, url in databases.urls.items()}
    resources["sync_api"] = HttpSyncApiClient(api_key=API_KEY)
    return build_dry_run_job(TAMHR_SYNC, settings).execute_in_process(
        run_config={"ops": config or {}}, resources=resources, instance=instance or dg.DagsterInstance.ephemeral()
    )


def observed(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata values of the dry run's observation of `asset`."""
    (event,) = [e for e in result.get_asset_observation_events() if e.asset_key.path[-1] == asset]
    return {name: entry.value for name, entry in event.asset_observation_data.asset_observation.metadata.items()}


def test_a_dry_run_of_the_whole_job_counts_and_previews_but_posts_and_writes_nothing(
    databases: SyncDatabases, live_settings: Settings, receiver: ReceivingApi
) -> None:
    users = databases.insert_rows("Users", 6)
    for spec in TAMHR_ENTITIES[1:]:
        databases.insert_rows(spec.name, 6)
    databases.track("Users", [str(row["Id"]) for row in users[:2]])

    result = dry_run(databases, live_settings)

    assert result.success and result.dagster_run.tags[DRY_RUN_TAG] == "true"
    users_metadata = observed(result, "users")
    figures = ("dry_run", "would_send", "already_tracked", "batches")
    assert tuple(users_metadata[name] for name in figures) == (True, 4, 2, 1)
    payload = users_metadata["first_payload"]
    assert sum(str(row["Id"]) in payload for row in users[2:]) == 3, "the preview shows three untracked records"
    assert not any(str(row["Id"]) in payload for row in users[:2]) and API_KEY not in payload
    assert all(observed(result, s.asset_name)["would_send"] == 6 for s in TAMHR_ENTITIES[1:])
    assert result.get_asset_materialization_events() == [] and result.get_asset_check_evaluations() == []
    assert sum(len(sizes) for sizes in receiver.log.call_sizes.values()) == 0
    assert databases.scheduler_log_rows() == [] and len(databases.tracking_rows()) == 2


def test_a_dry_run_leaves_the_last_real_materialization_and_its_failed_check_as_they_were(
    databases: SyncDatabases, live_settings: Settings, receiver: ReceivingApi
) -> None:
    databases.insert_rows("Users", 6)
    instance = dg.DagsterInstance.ephemeral()
    resources: dict[str, Any] = {key: SyncDatabase(url=url) for key, url in databases.urls.items()}
    resources["sync_api"] = RecordingApiClient(unreachable_urls=[live_settings.endpoint_url("Users")])
    real = dg.materialize(
        build_entity_assets(TAMHR_SYNC, live_settings),
        resources=resources,
        selection=["users"],
        instance=instance,
        raise_on_error=False,
    )

    preview = dry_run(databases, live_settings, instance=instance)

    users = dg.AssetKey("users")
    latest = instance.get_latest_materialization_event(users)
    check = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(users, CHECK_NAME))
    assert preview.success and latest is not None and check is not None
    assert latest.run_id == real.run_id and check.run_id == real.run_id
    assert check.evaluation is not None and not check.evaluation.passed
    (observation,) = instance.fetch_observations(users, limit=10).records
    assert observation.run_id == preview.run_id
    assert observation.asset_observation is not None and observation.asset_observation.tags[DRY_RUN_TAG] == "true"


def test_a_preview_of_a_resend_needs_no_confirmation_and_sends_nothing(
    databases: SyncDatabases, live_settings: Settings, receiver: ReceivingApi
) -> None:
    rows = databases.insert_rows("Users", 6)
    databases.track("Users", [str(row["Id"]) for row in rows])

    result = dry_run(databases, live_settings, {"preview_users": {"config": {"resend": "all"}}})

    assert result.success and observed(result, "users")["would_send"] == 6
    assert receiver.log.calls(USERS_URL_PATH) == []


def test_a_resend_without_the_confirmation_is_refused_and_sends_nothing(
    databases: SyncDatabases, live_settings: Settings, receiver: ReceivingApi
) -> None:
    databases.insert_rows("Users", 6)

    result = materialize(databases, live_settings, {"users": {"config": {"resend": "all"}}}, ["users"])

    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "refused without confirm: 'resend users'" in str(failure.step_failure_data.user_failure_data.description)
    assert receiver.log.calls(USERS_URL_PATH) == []


def test_a_confirmed_full_resend_sends_everything_again_and_refreshes_tracking(
    databases: SyncDatabases, live_settings: Settings, receiver: ReceivingApi
) -> None:
    databases.insert_rows("Users", 6)
    materialize(databases, live_settings, {}, ["users"])
    first_tracked = {row["EntityId"]: row["SyncTimestamp"] for row in databases.tracking_rows()}
    time.sleep(0.01)

    result = materialize(
        databases, live_settings, {"users": {"config": {"resend": "all", "confirm": "resend users"}}}, ["users"]
    )

    assert result.success and metadata_of(result, "users")["sent"] == 6
    assert receiver.log.duplicates(USERS_URL_PATH) == 6
    refreshed = {row["EntityId"]: row["SyncTimestamp"] for row in databases.tracking_rows()}
    assert refreshed.keys() == first_tracked.keys()
    assert all(refreshed[entity_id] > first_tracked[entity_id] for entity_id in refreshed)


def test_a_resend_of_given_ids_sends_only_those_whatever_their_letter_case(
    databases: SyncDatabases, live_settings: Settings, receiver: ReceivingApi
) -> None:
    rows = databases.insert_rows("Users", 6)
    materialize(databases, live_settings, {}, ["users"])
    wanted = [str(row["Id"]) for row in rows[1:3]]

    config = {"resend": "ids", "ids": [wanted[0].upper(), wanted[1]], "confirm": "resend users"}
    result = materialize(databases, live_settings, {"users": {"config": config}}, ["users"])

    assert result.success and metadata_of(result, "users")["sent"] == 2
    assert sorted(entity_id for entity_id, n in receiver.log.ids[USERS_URL_PATH].items() if n == 2) == sorted(wanted)


def test_a_resend_of_records_tracked_before_a_time_sends_only_those(
    databases: SyncDatabases, live_settings: Settings, receiver: ReceivingApi
) -> None:
    rows = databases.insert_rows("Users", 6)
    databases.track("Users", [str(row["Id"]) for row in rows[:2]])  # tracked on 2024-06-01
    materialize(databases, live_settings, {}, ["users"])  # sends and tracks the other four today

    config = {"resend": "tracked_before", "tracked_before": "2025-01-01T00:00:00+00:00", "confirm": "resend users"}
    result = materialize(databases, live_settings, {"users": {"config": config}}, ["users"])

    assert result.success and metadata_of(result, "users")["sent"] == 2
    assert receiver.log.calls(USERS_URL_PATH) == [4, 2]
    assert sorted(receiver.log.ids[USERS_URL_PATH]) == sorted(str(row["Id"]) for row in rows)
    assert receiver.log.duplicates(USERS_URL_PATH) == 0, "the four tracked today were not sent again"


def test_the_dry_run_job_is_in_the_code_location_and_previews_every_entity_in_sync_order(
    databases: SyncDatabases, live_settings: Settings, receiver: ReceivingApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    for spec in TAMHR_ENTITIES:
        databases.insert_rows(spec.name, 3)
    for key, env_var in DATABASE_URL_ENV_VARS.items():
        monkeypatch.setenv(env_var, databases.urls[key])
    monkeypatch.setenv(API_KEY_ENV_VAR, API_KEY)
    job = build_definitions(live_settings).resolve_job_def(TAMHR_SYNC.dry_run_job_name)

    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())

    assert result.success
    order = [event.step_key for event in result.all_events if event.is_step_start]
    assert order == [f"preview_{spec.asset_name}" for spec in TAMHR_ENTITIES]
    assert [observed(result, s.asset_name)["would_send"] for s in TAMHR_ENTITIES] == [3] * 5
    assert sum(len(sizes) for sizes in receiver.log.call_sizes.values()) == 0
    assert databases.tracking_rows() == []
