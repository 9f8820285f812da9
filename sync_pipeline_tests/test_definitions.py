"""The Dagster wiring: definitions load, assets chain in order, and a run reports each entity."""

from __future__ import annotations

import datetime as dt
import gc
from typing import Any

import dagster as dg
import pytest

import sync_pipeline.definitions
from sync_pipeline.definitions import build_definitions
from sync_pipeline.engine.http.api import ApiResponse
from sync_pipeline.orchestration.sync_assets import CHECK_NAME, YOUNG_OBJECTS_PER_COLLECTION, build_entity_assets
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import DEFAULT_SETTINGS_PATH, Settings, load_settings, parse_settings
from sync_pipeline.specs.tamhr import DATABASE_URL_ENV_VARS, TAMHR_ENTITIES, TAMHR_SYNC

from .conftest import SettingsFactory, SyncDatabases, raw_default_settings
from .fakes import RecordingApiClient, ScriptedAnswer

ASSET_CHAIN = ["users", "actual_org", "actual_entity", "org_object", "events_calendar"]
METADATA_KEYS = {
    "rows_found",
    "candidates",
    "already_tracked",
    "sent",
    "failed",
    "batches_ok",
    "batches_failed",
    "rejected",
    "delivered_untracked",
    "api_calls",
    "retries",
    "records_per_second",
    "duration_seconds",
    "dagster/row_count",
    "rejected_records",
    "attempt_success_percent_24h",
    "last_success_utc",
    "outcome",
}


def test_the_code_location_definitions_load() -> None:
    dg.Definitions.validate_loadable(sync_pipeline.definitions.defs)


def test_five_assets_in_the_sync_group_each_depending_on_the_one_before() -> None:
    every = sync_pipeline.definitions.defs.resolve_all_asset_specs()
    specs = {spec.key: spec for spec in every if spec.group_name == TAMHR_SYNC.group}

    assert sorted(specs) == sorted(dg.AssetKey(name) for name in ASSET_CHAIN)
    others = {spec.key.to_user_string(): spec.group_name for spec in every if spec.key not in specs}
    assert others == {  # the Zuora pull and the field-service syncs, each a group of its own
        "zuora_workflows": "zuora_sync",
        "field_service_accounts": "field_service_sync",
        "field_service_contacts": "field_service_sync",
        "field_service_work_orders": "field_service_sync",
        "field_service_completed_work_orders": "field_service_sync",
    }
    upstream_of = {key.path[-1]: [dep.asset_key.path[-1] for dep in spec.deps] for key, spec in specs.items()}
    assert upstream_of == {
        "users": [],
        "actual_org": ["users"],
        "actual_entity": ["actual_org"],
        "org_object": ["actual_entity"],
        "events_calendar": ["org_object"],
    }


def test_the_schedule_takes_its_cron_and_time_zone_from_the_settings() -> None:
    raw = raw_default_settings()
    raw["schedule"] = {"cron": "15 1 * * *", "timezone": "Asia/Jakarta"}

    schedule = build_definitions(parse_settings(raw)).resolve_schedule_def(TAMHR_SYNC.schedule_name)

    assert schedule.cron_schedule == "15 1 * * *"
    assert schedule.execution_timezone == "Asia/Jakarta"
    assert schedule.job_name == TAMHR_SYNC.job_name
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_a_disabled_schedule_is_loaded_stopped() -> None:
    raw = raw_default_settings()
    raw["schedule"]["enabled"] = False

    schedule = build_definitions(parse_settings(raw)).resolve_schedule_def(TAMHR_SYNC.schedule_name)

    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED


def test_the_job_selects_the_whole_sync_group() -> None:
    job = sync_pipeline.definitions.defs.resolve_job_def(TAMHR_SYNC.job_name)

    assert sorted(key.path[-1] for key in job.asset_layer.executable_asset_keys) == sorted(ASSET_CHAIN)


def test_the_demo_settings_build_one_asset_per_entity_reading_its_own_database() -> None:
    settings = load_settings(DEFAULT_SETTINGS_PATH)

    assets = build_entity_assets(TAMHR_SYNC, settings)

    assert [asset.key.path[-1] for asset in assets] == ASSET_CHAIN
    for spec, asset in zip(TAMHR_ENTITIES, assets, strict=True):
        other_db = ({"default_db", "ess_db"} - {spec.source_db}).pop()
        assert {spec.source_db, "log_db", "sync_api"} <= asset.required_resource_keys
        assert other_db not in asset.required_resource_keys
        assert [check.name for check in asset.check_specs] == [CHECK_NAME]
        metadata = asset.specs_by_key[asset.key].metadata
        assert metadata["endpoint"] == dg.MetadataValue.url(settings.endpoint_url(spec.name))
        assert metadata["batch_size"] == 3000


def test_the_resources_read_secrets_only_from_environment_variables() -> None:
    resources = sync_pipeline.definitions.defs.resources or {}

    secrets = {key: resources[key].url for key in DATABASE_URL_ENV_VARS}
    secrets["sync_api"] = resources["sync_api"].api_key
    assert all(isinstance(value, dg.EnvVar) for value in secrets.values())
    assert secrets == {**DATABASE_URL_ENV_VARS, "sync_api": "SYNC_API_KEY"}


def run_resources(databases: SyncDatabases, api: RecordingApiClient) -> dict[str, Any]:
    """The resources of a test run: the three SQLite databases and the fake API."""
    return {**{key: SyncDatabase(url=url) for key, url in databases.urls.items()}, "sync_api": api}


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """Each materialized asset's metadata values, by asset name."""
    return {
        event.asset_key.path[-1]: {name: entry.value for name, entry in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None and event.materialization is not None
    }


def check_outcomes(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, dg.AssetCheckSeverity]]:
    """Each asset's `all_records_delivered` outcome and severity, by asset name."""
    return {
        evaluation.asset_key.path[-1]: (evaluation.passed, evaluation.severity)
        for evaluation in result.get_asset_check_evaluations()
        if evaluation.check_name == CHECK_NAME
    }


@pytest.fixture
def seeded(databases: SyncDatabases) -> SyncDatabases:
    """Five rows of every entity in its source database."""
    for spec in TAMHR_ENTITIES:
        databases.insert_rows(spec.name, 5)
    return databases


COLLECTOR_AT_CALLS: list[tuple[int, int]] = []
"""At each batch `CollectorWatchingApi` took: how many objects the garbage collector was told to leave alone,
and its first threshold."""


class CollectorWatchingApi(RecordingApiClient):
    """Notes the collector's freeze count and threshold at every batch it takes (in `COLLECTOR_AT_CALLS`: a
    resource keeps no state)."""

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        COLLECTOR_AT_CALLS.append((gc.get_freeze_count(), gc.get_threshold()[0]))
        return super().post_batch(url, body, idempotency_key)


def test_an_entity_syncs_with_what_the_process_held_before_it_frozen_and_the_collector_quiet_then_restored(
    seeded: SyncDatabases, settings: Settings
) -> None:
    COLLECTOR_AT_CALLS.clear()
    thresholds = gc.get_threshold()

    result = dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings)[:1], resources=run_resources(seeded, CollectorWatchingApi())
    )

    assert result.success and COLLECTOR_AT_CALLS
    frozen, young = zip(*COLLECTOR_AT_CALLS, strict=True)
    assert min(frozen) > 10_000, "Dagster and the code location are out of the collector's scans"
    assert set(young) == {YOUNG_OBJECTS_PER_COLLECTION}, "young collections wait for a few pages' worth"
    assert gc.get_freeze_count() == 0, "thawed: what the run drops later is collected as usual"
    assert gc.get_threshold() == thresholds


def test_materializing_the_group_syncs_every_entity_and_reports_it(seeded: SyncDatabases, settings: Settings) -> None:
    result = dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings), resources=run_resources(seeded, RecordingApiClient())
    )

    assert result.success
    metadata = materialized(result)
    assert list(metadata) == ASSET_CHAIN
    for name in ASSET_CHAIN:
        assert set(metadata[name]) == METADATA_KEYS
        varying = ("duration_seconds", "records_per_second", "last_success_utc")
        figures = {key: value for key, value in metadata[name].items() if key not in varying}
        assert figures == {
            "rows_found": 5,
            "candidates": 5,
            "already_tracked": 0,
            "sent": 5,
            "failed": 0,
            "batches_ok": 2,
            "batches_failed": 0,
            "rejected": 0,
            "delivered_untracked": 0,
            "api_calls": 2,
            "retries": 0,
            "dagster/row_count": 5,
            "rejected_records": 0,
            "attempt_success_percent_24h": 100.0,
            "outcome": "complete",
        }
        assert metadata[name]["duration_seconds"] >= 0
        assert abs(metadata[name]["last_success_utc"] - dt.datetime.now(dt.UTC).timestamp()) < 600
    assert check_outcomes(result) == {name: (True, dg.AssetCheckSeverity.ERROR) for name in ASSET_CHAIN}
    for spec in TAMHR_ENTITIES:
        assert len(seeded.tracked_ids(spec.name)) == 5


def test_a_failed_batch_fails_that_entitys_check_but_the_later_entities_still_run(
    seeded: SyncDatabases, settings: Settings
) -> None:
    api = RecordingApiClient(
        scripted_answers=[ScriptedAnswer(url=settings.endpoint_url("ActualOrg"), call_number=1, times=3, body="no")]
    )

    result = dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings), resources=run_resources(seeded, api), raise_on_error=False
    )

    outcomes = check_outcomes(result)
    assert outcomes["actual_org"] == (False, dg.AssetCheckSeverity.ERROR)
    assert all(outcomes[name][0] for name in ASSET_CHAIN if name != "actual_org")
    metadata = materialized(result)
    assert list(metadata) == ASSET_CHAIN
    assert (metadata["actual_org"]["sent"], metadata["actual_org"]["failed"]) == (2, 3)
    assert metadata["actual_org"]["dagster/row_count"] == 2
    assert metadata["events_calendar"]["sent"] == 5
    assert len(seeded.tracked_ids("ActualOrg")) == 2


def test_an_unreachable_endpoint_is_reported_on_the_check_and_the_run_goes_on(
    seeded: SyncDatabases, settings: Settings
) -> None:
    api = RecordingApiClient(unreachable_urls=[settings.endpoint_url("Users")])

    result = dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings), resources=run_resources(seeded, api), raise_on_error=False
    )

    (users_check,) = [e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey("users")]
    assert not users_check.passed
    assert users_check.metadata["stopped_early"].value is True
    assert "unreachable" in str(users_check.metadata["first_error"].value)
    assert materialized(result)["org_object"]["sent"] == 5


def test_actual_org_can_be_materialized_on_its_own(seeded: SyncDatabases, make_settings: SettingsFactory) -> None:
    settings = make_settings(batch_size=10)

    result = dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings),
        resources=run_resources(seeded, RecordingApiClient()),
        selection=["actual_org"],
    )

    assert result.success
    assert list(materialized(result)) == ["actual_org"]
    assert {row["EntityType"] for row in seeded.tracking_rows()} == {"ActualOrg"}
    assert [row["Activity"] for row in seeded.scheduler_log_rows()] == ["Sync Batch: ActualOrg"]


def step_failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """The failed steps of a run and their failure descriptions, by step."""
    return {
        str(event.step_key): str(event.step_failure_data.user_failure_data.description)
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data.user_failure_data is not None
    }


def test_a_run_in_which_an_entity_fell_short_ends_failed_after_every_entity_ran_naming_it(
    seeded: SyncDatabases, settings: Settings
) -> None:
    api = RecordingApiClient(unreachable_urls=[settings.endpoint_url("Users")])

    result = dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings), resources=run_resources(seeded, api), raise_on_error=False
    )

    assert not result.success
    assert list(materialized(result)) == ASSET_CHAIN, "every entity had its turn"
    assert materialized(result)["users"]["outcome"].startswith("endpoint unreachable")
    (failed_step, description), *others = step_failures(result).items()
    assert (failed_step, others) == ("events_calendar", [])
    assert description.startswith("sync incomplete in 1 of 5 entities") and "Users: endpoint unreachable" in description
    assert len(seeded.tracked_ids("EventsCalendar")) == 5


def test_a_single_asset_run_that_fell_short_fails_and_one_that_delivered_everything_succeeds(
    seeded: SyncDatabases, settings: Settings
) -> None:
    assets = build_entity_assets(TAMHR_SYNC, settings)
    refusing = RecordingApiClient(
        scripted_answers=[ScriptedAnswer(url=settings.endpoint_url("ActualOrg"), call_number=1, times=3, body="no")]
    )

    failed = dg.materialize(
        assets, resources=run_resources(seeded, refusing), selection=["actual_org"], raise_on_error=False
    )
    rerun = dg.materialize(assets, resources=run_resources(seeded, RecordingApiClient()), selection=["actual_org"])

    assert not failed.success
    assert "ActualOrg: HTTP 500" in step_failures(failed)["actual_org"]
    assert rerun.success and materialized(rerun)["actual_org"]["sent"] == 3
    assert len(seeded.tracked_ids("ActualOrg")) == 5


def test_every_run_executes_its_steps_in_the_run_process() -> None:
    job = sync_pipeline.definitions.defs.resolve_job_def(TAMHR_SYNC.job_name)

    assert job.executor_def is dg.in_process_executor
