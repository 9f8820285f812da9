"""A brand-new sync declared only in YAML runs beside TAMHR: created once, then nothing, then only what changed.

The sync reads a table of its own database, renames a field and maps another's values, and creates
or updates each record by row hash at another HTTP API with another auth header (a bearer token).
No engine code knows it: everything about it is in the defs.yaml below.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from sync_pipeline.definitions import build_definitions
from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.tables import row_hash_table, scheduler_log_table, source_table, tracking_table
from sync_pipeline.orchestration.component import SyncComponent
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import load_settings, parse_settings
from sync_pipeline.specs.tamhr import DATABASE_URL_ENV_VARS, TAMHR_SYNC

from .conftest import SERVERS, fresh_databases, table_rows

TOKEN = "crm-token-7f3a"
DEFS_YAML = """
type: sync_pipeline.orchestration.component.SyncComponent
attributes:
  name: crm_push
  entities:
    - name: Customers
      source_db: crm_db
      fields:
        - {name: Id, type: guid}
        - {name: Name, length: 200}
        - {name: Status, type: int}
      mapping:
        id: {from: Id}
        display_name: {from: Name}
        status: {from: Status, value_map: {1: active, 0: inactive}}
      state: row_hash
      sink: {kind: http_records, update_method: PUT, id_field: id}
  settings:
    api:
      base_url: "{base_url}"
      auth: {kind: bearer}
      api_key_env_var: CRM_API_TOKEN
    databases: {crm_db: CRM_DB_URL, log_db: SYNC_LOG_DB_URL}
    entities:
      Customers: {table: crm_customers, endpoint: customers}
"""


@pytest.fixture(params=sorted(SERVERS))
def crm_and_tamhr(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The CRM database and TAMHR's three, the Log database shared, on one real server."""
    with fresh_databases(request.param, ("crm_db", "default_db", "ess_db", "log_db")) as urls:
        yield urls


def run(defs: dg.Definitions, job: str) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    return result


def test_a_sync_declared_only_in_yaml_creates_then_skips_then_updates_only_what_changed(
    crm_and_tamhr: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = crm_and_tamhr
    with ReceivingApi(api_key=f"Bearer {TOKEN}", api_key_header="Authorization") as crm_api:
        attributes = yaml.safe_load(DEFS_YAML.replace("{base_url}", crm_api.records_url("")))["attributes"]
        component = SyncComponent.resolve_from_dict(attributes)
        crm = dg.build_defs_for_component(component)
        tamhr_settings = load_settings()
        defs = dg.Definitions.merge(build_definitions(tamhr_settings), crm)
        for key, env_var in DATABASE_URL_ENV_VARS.items():
            monkeypatch.setenv(env_var, urls[key])
        monkeypatch.setenv("CRM_DB_URL", urls["crm_db"])
        monkeypatch.setenv("CRM_API_TOKEN", TOKEN)

        log = create_sync_engine(urls["log_db"])
        create_log_tables(log)
        with log.begin() as conn:  # what TAMHR delivered before: untouched by the new sync
            tracked = {"EntityType": "Users", "EntityId": str(uuid.uuid4()), "SyncTimestamp": dt.datetime(2026, 1, 1)}
            conn.execute(sa.insert(tracking_table), [tracked])
        tamhr_rows_before = table_rows(log, tracking_table)

        sync = component.sync_spec(tmp_path)
        where = parse_settings(attributes["settings"], sync=sync).entities["Customers"]
        table = source_table(sync.entities[0], where)
        source = create_sync_engine(urls["crm_db"])
        table.metadata.create_all(source)
        ids = [uuid.uuid4() for _ in range(5)]
        with source.begin() as conn:
            conn.execute(
                sa.insert(table),
                [{"Id": i, "Name": f"Customer {n}", "Status": n % 2} for n, i in enumerate(ids)],
            )

        run(defs, "crm_push_sync_job")
        created = crm_api.collections.stored("customers")
        assert sorted(record["display_name"] for record in created.values()) == [f"Customer {n}" for n in range(5)]
        assert Counter(record["status"] for record in created.values()) == {"inactive": 3, "active": 2}
        assert {record["id"] for record in created.values()} == {str(i) for i in ids}
        assert [method for method, _, _ in crm_api.collections.methods("customers")] == ["POST"] * 5

        run(defs, "crm_push_sync_job")
        assert len(crm_api.collections.methods("customers")) == 5  # nothing changed: no call

        with source.begin() as conn:
            conn.execute(sa.update(table).where(table.c.Id == ids[1]).values(Name="Renamed 1"))
            conn.execute(sa.update(table).where(table.c.Id == ids[2]).values(Status=1))
        run(defs, "crm_push_sync_job")
        third = crm_api.collections.methods("customers")[5:]
        external = {record["id"]: key for key, record in created.items()}
        assert sorted((method, record_id) for method, record_id, _ in third) == sorted(
            [("PUT", external[str(ids[1])]), ("PUT", external[str(ids[2])])]
        )
        updated = crm_api.collections.stored("customers")
        assert updated[external[str(ids[1])]]["display_name"] == "Renamed 1"
        assert updated[external[str(ids[2])]]["status"] == "active"
        assert len(updated) == 5

        assert table_rows(log, tracking_table) == tamhr_rows_before
        hashes = table_rows(log, row_hash_table)
        assert {row["EntityType"] for row in hashes} == {"crm_push.Customers"} and len(hashes) == 5
        activities = Counter(row["Activity"] for row in table_rows(log, scheduler_log_table))
        assert activities == {"Sync Batch: crm_push.Customers": 7}
        assert not any(TOKEN in str(row) for row in table_rows(log, scheduler_log_table))
        assert TAMHR_SYNC.entity_type(TAMHR_SYNC.entities[0]) == "Users"
        source.dispose()
        log.dispose()
