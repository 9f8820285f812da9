"""Syncs as the unit of declaration: each is a SyncComponent instance, and two syncs in one code location never mix."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

import sync_pipeline.definitions
from sync_pipeline.definitions import build_definitions, shared_definitions
from sync_pipeline.engine.tables import lock_table
from sync_pipeline.orchestration.component import SyncComponent, SyncScaffolder
from sync_pipeline.orchestration.run_config import SyncRunConfig, selection_from
from sync_pipeline.orchestration.sync_definitions import build_sync_definitions
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import Settings, SettingsError, parse_settings
from sync_pipeline.specs.model import EntitySpec
from sync_pipeline.specs.sync import SyncSpec, SyncSpecError
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC

from .conftest import SyncDatabases, raw_default_settings
from .fakes import RecordingApiClient

USERS = ENTITIES_BY_NAME["Users"]
CRM = SyncSpec(name="crm", declared_entities=(USERS,), namespace="crm")
"""A second sync of the same table to another API: the same entity name, its own namespace."""
REPO_ROOT = Path(__file__).parent.parent
DG = str(Path(sys.executable).with_name("dg"))
IN_THE_VENV = {**os.environ, "VIRTUAL_ENV": sys.prefix}


def crm_settings() -> Settings:
    raw = raw_default_settings()
    raw["api"]["base_url"] = "http://127.0.0.1:9/crm/"
    raw["databases"] = {"default_db": "CRM_DEFAULT_DB_URL", "log_db": "SYNC_LOG_DB_URL"}
    raw["entities"] = {"Users": raw["entities"]["Users"]}
    return parse_settings(raw, source="crm settings", sync=CRM)


def both_syncs(tamhr_settings: Settings, urls: dict[str, str], apis: dict[str, RecordingApiClient]) -> dg.Definitions:
    """TAMHR and CRM in one code location, each sync's resources bound to the test's databases and fake APIs."""
    built = dg.Definitions.merge(
        build_sync_definitions(TAMHR_SYNC, tamhr_settings),
        build_sync_definitions(CRM, crm_settings()),
        shared_definitions(),
    )
    resources: dict[str, Any] = dict(built.resources or {})
    for sync in (TAMHR_SYNC, CRM):
        resources[sync.resource_key("sync_api")] = apis[sync.name]
        for key in ("default_db", "ess_db", "log_db"):
            resources[sync.resource_key(key)] = SyncDatabase(url=urls[key])
    return dg.Definitions(
        assets=built.assets,
        jobs=built.jobs,
        schedules=built.schedules,
        sensors=built.sensors,
        resources=resources,
        executor=built.executor,
    )


def test_the_tamhr_component_instance_builds_what_the_tamhr_factory_builds_beside_zuora_and_field_service(
    settings: Settings,
) -> None:
    loaded = sync_pipeline.definitions.defs.get_repository_def()
    built = build_definitions(settings).get_repository_def()

    others = {"zuora_sync_job", "zuora_sync_dry_run", "zuora_retention"}
    others |= {"field_service_sync_job", "field_service_sync_dry_run"}
    assert set(loaded.job_names) == set(built.job_names) | others
    assert {s.name for s in loaded.schedule_defs} == {
        TAMHR_SYNC.schedule_name,
        "zuora_sync_nightly",
        "zuora_retention_schedule",
        "field_service_sync_nightly",
    }
    assert {s.name for s in loaded.sensor_defs} == {
        TAMHR_SYNC.sensor_name,
        "zuora_sync_alerts",
        "zuora_customers",
        "field_service_sync_alerts",
    }
    tamhr_assets = {dg.AssetKey(spec.asset_name) for spec in TAMHR_SYNC.entities}
    field_service = {
        dg.AssetKey(f"field_service_{name}")
        for name in ("accounts", "contacts", "work_orders", "completed_work_orders")
    }
    assert set(loaded.assets_defs_by_key) == tamhr_assets | {dg.AssetKey("zuora_workflows")} | field_service


def test_dg_lists_the_sync_component_and_checks_its_instances() -> None:
    listed = subprocess.run(
        [DG, "list", "components", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=IN_THE_VENV,
        check=True,
        timeout=120,
    )
    keys = {entry["key"] for entry in json.loads(listed.stdout)["items"]}
    assert "sync_pipeline.orchestration.component.SyncComponent" in keys
    checked = subprocess.run(
        [DG, "check", "defs"], capture_output=True, text=True, cwd=REPO_ROOT, env=IN_THE_VENV, timeout=120
    )
    assert checked.returncode == 0, checked.stderr[-2000:]


def test_two_syncs_get_their_own_group_jobs_schedule_sensor_and_resources(settings: Settings) -> None:
    apis = {"tamhr": RecordingApiClient(), "crm": RecordingApiClient()}
    unused = {key: "sqlite://" for key in ("default_db", "ess_db", "log_db")}
    repository = both_syncs(settings, unused, apis).get_repository_def()

    assert {"tamhr_sync_job", "tamhr_sync_dry_run", "crm_sync_job", "crm_sync_dry_run"} <= set(repository.job_names)
    assert {s.name for s in repository.schedule_defs} == {"tamhr_sync_nightly", "crm_sync_nightly"}
    assert {s.name for s in repository.sensor_defs} == {"tamhr_sync_alerts", "crm_sync_alerts"}
    crm_asset = repository.assets_defs_by_key[dg.AssetKey("crm_users")]
    assert crm_asset.group_names_by_key[crm_asset.key] == "crm_sync"
    assert crm_asset.required_resource_keys - {"io_manager"} == {"crm_default_db", "crm_log_db", "crm_sync_api"}
    users = repository.assets_defs_by_key[dg.AssetKey("users")]
    assert users.required_resource_keys - {"io_manager"} == {"default_db", "log_db", "sync_api"}


def test_a_sync_reads_its_secrets_from_the_variables_its_settings_name() -> None:
    resources = build_sync_definitions(CRM, crm_settings()).resources or {}

    assert resources["crm_default_db"].url == dg.EnvVar("CRM_DEFAULT_DB_URL")
    assert resources["crm_log_db"].url == dg.EnvVar("SYNC_LOG_DB_URL")
    assert "default_db" not in resources and "crm_ess_db" not in resources


def test_two_syncs_of_the_same_entity_track_log_and_lock_apart(databases: SyncDatabases, settings: Settings) -> None:
    databases.insert_rows("Users", 5)
    apis = {"tamhr": RecordingApiClient(), "crm": RecordingApiClient()}
    defs = both_syncs(settings, databases.urls, apis)

    assert defs.resolve_job_def("tamhr_sync_job").execute_in_process(asset_selection=[dg.AssetKey("users")]).success
    assert defs.resolve_job_def("crm_sync_job").execute_in_process().success
    again = defs.resolve_job_def("tamhr_sync_job").execute_in_process(asset_selection=[dg.AssetKey("users")])

    assert again.success
    tracked = sorted((row["EntityType"], row["EntityId"]) for row in databases.tracking_rows())
    assert [entity_type for entity_type, _ in tracked] == ["Users"] * 5 + ["crm.Users"] * 5
    assert {entity_id for _, entity_id in tracked[:5]} == {entity_id for _, entity_id in tracked[5:]}
    activities = {row["Activity"] for row in databases.scheduler_log_rows()}
    assert activities == {"Sync Batch: Users", "Sync Batch: crm.Users"}

    with databases.log.begin() as conn:  # another host holds TAMHR's Users lock: CRM's Users is not held up
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        conn.execute(
            sa.insert(lock_table).values(
                EntityType="Users", Owner="elsewhere", AcquiredOn=now, ExpiresOn=now + dt.timedelta(hours=1)
            )
        )
    databases.insert_rows("Users", 2, start=5)
    held = defs.resolve_job_def("tamhr_sync_job").execute_in_process(
        asset_selection=[dg.AssetKey("users")], raise_on_error=False
    )
    crm_run = defs.resolve_job_def("crm_sync_job").execute_in_process()

    assert not held.success
    assert crm_run.success
    counts = Counter(row["EntityType"] for row in databases.tracking_rows())
    assert counts == {"Users": 5, "crm.Users": 7}


def test_a_sync_settings_file_must_name_every_database_its_entities_read() -> None:
    raw = raw_default_settings()
    raw["databases"] = {"log_db": "SYNC_LOG_DB_URL"}
    raw["entities"] = {"Users": raw["entities"]["Users"]}

    with pytest.raises(SettingsError, match=r"databases\.default_db: is required"):
        parse_settings(raw, sync=CRM)


def test_a_sync_settings_file_names_only_the_entities_of_its_sync() -> None:
    with pytest.raises(SettingsError, match=r"entities\.ActualEntity: is not a known entity; known: Users"):
        parse_settings(raw_default_settings(), sync=CRM)


@pytest.mark.parametrize(
    ("name", "namespace", "entities", "message"),
    [
        ("CRM", "crm", (USERS,), "name must be lower-case"),
        ("crm", "CRM.", (USERS,), "namespace 'CRM.' must look like a sync name"),
        ("crm", "crm", (), "has no entities"),
        ("crm", "crm", (USERS, USERS), "entity name 'Users' appears twice"),
    ],
)
def test_a_sync_declaration_that_cannot_be_built_says_why(
    name: str, namespace: str, entities: tuple[EntitySpec, ...], message: str
) -> None:
    with pytest.raises(SyncSpecError, match=message):
        SyncSpec(name=name, declared_entities=entities, namespace=namespace)


def test_scaffolding_a_sync_writes_an_instance_that_loads_beside_tamhr(tmp_path: Path, settings: Settings) -> None:
    target = tmp_path / "tamhr_b"
    target.mkdir()
    request = dg.ScaffoldRequest(
        type_name="sync_pipeline.orchestration.component.SyncComponent",
        target_path=target,
        scaffold_format="yaml",
        project_root=REPO_ROOT,
        params=None,
        append=False,
    )
    SyncScaffolder().scaffold(request)
    declared = yaml.safe_load((target / "defs.yaml").read_text())
    attributes = declared["attributes"]
    assert declared["type"] == "sync_pipeline.orchestration.component.SyncComponent"
    assert attributes == {"sync": "tamhr", "name": "tamhr_b", "settings_file": "settings.yaml"}
    assert (target / "settings.yaml").read_text() == (
        Path(sync_pipeline.__file__).parent / "settings.example.yaml"
    ).read_text()

    attributes["settings_file"] = str(target / "settings.yaml")
    second = dg.build_defs_for_component(SyncComponent(**attributes))
    repository = dg.Definitions.merge(build_definitions(settings), second).get_repository_def()

    assert {"tamhr_sync_job", "tamhr_b_sync_job", "tamhr_b_sync_dry_run"} <= set(repository.job_names)
    assert {dg.AssetKey("users"), dg.AssetKey("tamhr_b_users")} <= set(repository.assets_defs_by_key)
    b_users = repository.assets_defs_by_key[dg.AssetKey("tamhr_b_users")]
    assert b_users.required_resource_keys - {"io_manager"} == {
        "tamhr_b_default_db",
        "tamhr_b_log_db",
        "tamhr_b_sync_api",
    }
    assert TAMHR_SYNC.renamed("tamhr_b").entity_type(USERS) == "tamhr_b.Users"


def test_an_instance_of_an_unknown_sync_fails_the_load_naming_the_known_ones() -> None:
    with pytest.raises(SettingsError, match="sync: 'payroll' is not a declared sync; known: tamhr"):
        dg.build_defs_for_component(SyncComponent(sync="payroll"))


def declared_customers(**entity: Any) -> dict[str, Any]:
    """A SyncComponent's attributes declaring one create/update entity, with `entity` overriding its keys."""
    raw = raw_default_settings()
    return {
        "name": "crm_push",
        "entities": [
            {
                "name": "Customers",
                "source_db": "crm_db",
                "fields": [{"name": "Id", "type": "guid"}, {"name": "Status", "type": "int"}],
                "mapping": {"id": {"from": "Id"}, "status": {"from": "Status", "value_map": {1: "active"}}},
                "state": "row_hash",
                "sink": {"kind": "http_records"},
                **entity,
            }
        ],
        "settings": {
            "api": {"base_url": "http://127.0.0.1:9/crm/", "auth": {"kind": "bearer"}, "api_key_env_var": "CRM_TOKEN"},
            "databases": {"crm_db": "CRM_DB_URL", "log_db": "SYNC_LOG_DB_URL"},
            "entities": {"Customers": {**raw["entities"]["Users"], "table": "crm_customers"}},
        },
    }


def test_a_sync_declared_in_yaml_builds_its_asset_resources_and_secrets_by_its_settings() -> None:
    defs = dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared_customers()))
    repository = defs.get_repository_def()

    asset = repository.assets_defs_by_key[dg.AssetKey("crm_push_customers")]
    assert asset.group_names_by_key[asset.key] == "crm_push_sync"
    assert "Creates new and updates changed Customers" in str(asset.specs_by_key[asset.key].description)
    resources = defs.resources or {}
    assert resources["crm_push_sync_api"].api_key == dg.EnvVar("CRM_TOKEN")
    assert resources["crm_push_sync_api"].auth_kind == "bearer"
    assert resources["crm_push_crm_db"].url == dg.EnvVar("CRM_DB_URL")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"state": "never_sent"}, "state: never_sent cannot go with a http_records sink"),
        ({"sink": {"kind": "http_batch"}}, "state: row_hash cannot go with a http_batch sink"),
        ({"mapping": {"id": {"from": "Nope"}}}, "entities.Customers.mapping: .*Nope"),
        ({"fields": []}, r"entities\.0\.fields"),
        ({"source_db": "other_db"}, r"databases\.other_db: is required"),
        ({"source": {"kind": "http_pages", "pagination": {"style": "offset"}}}, "give source_db .* or source"),
        ({"state": "since_cursor"}, "cursor_field: state since_cursor needs the field"),
        ({"state": "since_cursor", "cursor_field": "Id"}, "Id is guid; a cursor is a datetime, int or text"),
        ({"cursor_field": "Status"}, "cursor_field: only read with state since_cursor"),
        ({"sink": {"kind": "sql_upsert", "db": "app_db", "key_columns": ["id"]}}, "sink.timestamp_column: is required"),
        ({"sink": {"kind": "sql_update", "db": "app_db", "key_columns": ["id"]}}, "sink.columns: is required"),
        ({"sink": {"kind": "http_records", "db": "app_db"}}, "sink.db: not read by a http_records sink"),
        (
            {"state": "none", "sink": {"kind": "sql_update", "db": "crm_db", "key_columns": ["id"], "columns": ["s"]}},
            r"entities\.Customers\.target_table: is required for Customers \(the table its SQL sink writes\)",
        ),
    ],
)
def test_a_declared_sync_that_cannot_run_fails_the_load_saying_where(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared_customers(**change)))


def declared_pull() -> dict[str, Any]:
    """A SyncComponent's attributes declaring one pull: an API's pages upserted into a table from the mark on."""
    return {
        "name": "wf_pull",
        "entities": [
            {
                "name": "Workflows",
                "source": {"kind": "http_pages", "pagination": {"style": "page_number"}, "since_param": "since"},
                "fields": [{"name": "id", "type": "int"}, {"name": "updated_at", "type": "datetime"}],
                "state": "since_cursor",
                "cursor_field": "updated_at",
                "sink": {"kind": "sql_upsert", "db": "app_db", "key_columns": ["id"], "timestamp_column": "updated_at"},
            }
        ],
        "settings": {
            "api": {"base_url": "http://127.0.0.1:9/zuora/", "api_key_env_var": "WF_KEY"},
            "databases": {"app_db": "APP_DB_URL", "log_db": "SYNC_LOG_DB_URL"},
            "entities": {"Workflows": {"key_column": "id", "endpoint": "workflows", "target_table": "app.workflows"}},
        },
    }


def test_a_declared_pull_reads_the_api_and_writes_its_table_without_a_source_database() -> None:
    defs = dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared_pull()))
    asset = defs.get_repository_def().assets_defs_by_key[dg.AssetKey("wf_pull_workflows")]
    spec = asset.specs_by_key[asset.key]
    assert spec.description == (
        "Upserts (last write wins) changed Workflows records from GET http://127.0.0.1:9/zuora/workflows "
        "into app.workflows."
    )
    assert spec.metadata["target_table"] == "app.workflows" and spec.metadata["state"] == "since_cursor"
    assert "source_table" not in spec.metadata
    assert asset.required_resource_keys - {"io_manager"} == {"wf_pull_app_db", "wf_pull_log_db", "wf_pull_sync_api"}


def test_a_sync_between_databases_needs_no_api_section_and_gets_no_api_client() -> None:
    declared = declared_customers(
        state="none", sink={"kind": "sql_update", "db": "crm_db", "key_columns": ["id"], "columns": ["status"]}
    )
    declared["settings"] = {
        "databases": {"crm_db": "CRM_DB_URL", "log_db": "SYNC_LOG_DB_URL"},
        "entities": {"Customers": {"key_column": "Id", "table": "crm_orders", "target_table": "crm_customers"}},
    }
    defs = dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared))
    assert set(defs.resources or {}) == {"crm_push_crm_db", "crm_push_log_db"}
    asset = defs.get_repository_def().assets_defs_by_key[dg.AssetKey("crm_push_customers")]
    assert asset.required_resource_keys - {"io_manager"} == {"crm_push_crm_db", "crm_push_log_db"}

    declared["settings"]["entities"]["Customers"]["endpoint"] = "customers"
    with pytest.raises(SettingsError, match="endpoint: not read, Customers has no HTTP source or sink; remove it"):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"source": {"kind": "http_pages", "pagination": {"style": "offset"}}},
            "source.since_param: state since_cursor needs the query parameter",
        ),
        ({"source": {"kind": "http_pages", "pagination": {"style": "pages"}}}, "pagination.style"),
        (
            {
                "sink": {"kind": "sql_upsert", "db": "app_db", "key_columns": ["id"], "timestamp_column": "x"},
                "state": "never_sent",
                "cursor_field": None,
            },
            "never_sent cannot go with a sql_upsert sink",
        ),
        (
            {
                "sink": {
                    "kind": "sql_upsert",
                    "db": "app_db",
                    "key_columns": ["id"],
                    "timestamp_column": "updated_at",
                    "deleted_column": "gone",
                }
            },
            "sink.deleted_column: needs state none",
        ),
        (
            {
                "sink": {
                    "kind": "sql_update",
                    "db": "app_db",
                    "key_columns": ["id"],
                    "columns": ["x"],
                    "deleted_column": "gone",
                }
            },
            "sink.deleted_column: not read by a sql_update sink",
        ),
    ],
)
def test_a_declared_pull_that_cannot_run_fails_the_load_saying_where(change: dict[str, Any], message: str) -> None:
    declared = declared_pull()
    declared["entities"][0].update(change)
    declared["entities"][0] = {key: value for key, value in declared["entities"][0].items() if value is not None}
    with pytest.raises(SettingsError, match=message):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared))


def test_a_pull_without_an_api_section_fails_the_load_naming_it() -> None:
    declared = declared_pull()
    del declared["settings"]["api"]
    with pytest.raises(SettingsError, match="api: is required: Workflows read from or send to the API"):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared))


def test_an_instance_gives_either_a_packaged_sync_or_its_own_entities() -> None:
    both = {**declared_customers(), "sync": "tamhr"}
    with pytest.raises(SettingsError, match="give either sync"):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(both))
    unnamed = {key: value for key, value in declared_customers().items() if key != "name"}
    with pytest.raises(SettingsError, match="needs a name"):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(unnamed))


@pytest.mark.parametrize("resend", ["all", "ids", "tracked_before"])
def test_a_resend_is_refused_for_an_entity_that_creates_and_updates_by_row_hash(resend: str) -> None:
    declared = SyncComponent.resolve_from_dict(declared_customers()).sync_spec(Path("defs.yaml"))
    customers = declared.entities[0]
    config = SyncRunConfig(resend=resend, ids=["1"], tracked_before="2026-01-01", confirm="resend crm_push_customers")

    with pytest.raises(dg.Failure, match="keeps state row_hash"):
        selection_from(config, customers, "Id")
    assert selection_from(SyncRunConfig(), customers, "Id").resend == "none"


def declared_per_customer() -> dict[str, Any]:
    """The pull above, run once per customer: credentials and base URLs from a customers table."""
    declared = declared_pull()
    declared["entities"][0]["state"] = "none"
    declared["entities"][0].pop("cursor_field")
    declared["entities"][0]["source"].pop("since_param")
    declared["entities"][0]["sink"]["partition_column"] = "customer_id"
    declared["settings"]["api"] = {}
    declared["settings"]["customers"] = {"db": "app_db"}
    return declared


def test_a_sync_run_per_customer_has_a_partition_per_customer_a_sensor_and_a_run_per_customer_a_night() -> None:
    defs = dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared_per_customer()))
    dg.Definitions.validate_loadable(defs)
    asset = defs.get_repository_def().assets_defs_by_key[dg.AssetKey("wf_pull_workflows")]
    assert isinstance(asset.partitions_def, dg.DynamicPartitionsDefinition)
    assert asset.partitions_def.name == "wf_pull_customers"
    assert asset.required_resource_keys - {"io_manager"} == {"wf_pull_app_db", "wf_pull_log_db", "wf_pull_customers"}
    resources = defs.resources or {}
    assert "wf_pull_sync_api" not in resources
    assert resources["wf_pull_customers"].secret_key == dg.EnvVar("ZUORA_SECRET_KEY")

    schedule = defs.resolve_schedule_def("wf_pull_sync_nightly")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("wf_pull_customers", ["acme", "beta"])
        night = dt.datetime(2026, 12, 2, 3)
        repository = defs.get_repository_def()
        with dg.build_schedule_context(instance, night, repository_def=repository) as context:
            requests = schedule.evaluate_tick(context).run_requests or []
    assert sorted(request.partition_key or "" for request in requests) == ["acme", "beta"]
    assert defs.resolve_sensor_def("wf_pull_customers").minimum_interval_seconds == 60
    assert defs.resolve_job_def("wf_pull_sync_job").tags["dagster/max_runtime"] == "1800"  # alerts.max_run_minutes
    assert asset.op.pool == "wf_pull"  # dagster.yaml: concurrency.pools.default_limit


def test_a_sync_run_per_customer_needs_its_customers_database_named() -> None:
    declared = declared_per_customer()
    declared["settings"]["customers"] = {"db": "crm_db"}
    with pytest.raises(SettingsError, match=r"customers\.db: 'crm_db' is not in databases"):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared))
    declared["settings"].pop("customers")
    with pytest.raises(SettingsError, match=r"api.base_url: is required \(unless the sync runs per customer"):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(declared))
