"""A pull run once per customer, declared in YAML: each customer a partition, with its own Zuora credentials.

Customers are rows of the application's customers table (client secret Fernet-encrypted). A sensor
keeps one dynamic partition per active customer; each partition's run gets an OAuth2 token for that
customer, reads its workflow pages from the local Zuora (next page links, 50 a page) and upserts
them into the application's table on (customer, Zuora id), last write wins. A customer whose
credentials Zuora refuses fails its own run, named, without a secret anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from sync_pipeline.connectors.zuora.customers import SecretBox, customers_metadata, customers_table
from sync_pipeline.definitions import shared_definitions
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.demo.zuora import ZuoraSimulator, new_credentials
from sync_pipeline.demo.zuora_seed import customer_row, simulator_address
from sync_pipeline.engine.state.dead_letters import DeadLetters
from sync_pipeline.engine.tables import lock_table, scheduler_log_table
from sync_pipeline.resources.database import create_sync_engine

from .conftest import SERVERS, fresh_databases, materialized, table_rows
from .customer_pull import pull_definitions, step_retries, workflows_table


@pytest.fixture(params=sorted(SERVERS))
def databases(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The application's database (customers and workflows) and the Log database on one real server."""
    with fresh_databases(request.param, ("app_db", "log_db")) as urls:
        yield urls


def test_each_customer_is_a_partition_pulled_with_its_own_token_into_rows_of_its_own(
    databases: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key().decode()
    box = SecretBox(key, "ZUORA_SECRET_KEY")
    monkeypatch.setenv("APP_DB_URL", databases["app_db"])
    monkeypatch.setenv("SYNC_LOG_DB_URL", databases["log_db"])
    monkeypatch.setenv("ZUORA_SECRET_KEY", key)
    log = create_sync_engine(databases["log_db"])
    create_log_tables(log)
    app = create_sync_engine(databases["app_db"])
    customers_metadata.create_all(app)
    workflows = workflows_table()
    workflows.metadata.create_all(app)

    with ZuoraSimulator() as zuora:
        acme, beta = zuora.add_tenant("acme", workflows=120), zuora.add_tenant("beta", workflows=30)
        stranger = new_credentials("stranger")  # a Zuora client the simulator never issued
        simulator = simulator_address(zuora)
        with app.begin() as conn:
            conn.execute(
                sa.insert(customers_table),
                [
                    customer_row(box, "acme", acme, f"http://{simulator}"),
                    customer_row(box, "beta", beta, f"http://{simulator}"),
                    customer_row(box, "bad", stranger, f"http://{simulator}"),
                    {**customer_row(box, "gone", beta, f"http://{simulator}"), "Active": False},
                ],
            )
        defs = pull_definitions(simulator)
        instance = dg.DagsterInstance.ephemeral()

        sensor = defs.resolve_sensor_def("zuora_customers")
        with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
            tick = sensor.evaluate_tick(context)
        (added,) = tick.dynamic_partitions_requests or []
        assert isinstance(added, dg.AddDynamicPartitionsRequest)
        assert added.partition_keys == ["acme", "bad", "beta"]  # active ones only, bad credentials included
        instance.add_dynamic_partitions("zuora_customers", list(added.partition_keys))

        preview = defs.resolve_job_def("zuora_sync_dry_run").execute_in_process(instance=instance, partition_key="acme")
        (observed,) = [e for e in preview.all_events if e.event_type_value == "ASSET_OBSERVATION"]
        assert observed.event_specific_data.asset_observation.metadata["would_send"].value == 120  # type: ignore[union-attr]
        assert table_rows(app, workflows) == [] and table_rows(log, scheduler_log_table) == []  # writes nothing

        job = defs.resolve_job_def("zuora_sync_job")
        listed_before = zuora.counts.calls["/v1/workflows"]
        zuora.fail_token_requests(503)  # the token endpoint down once: a passing cause, tried again
        first = job.execute_in_process(instance=instance, partition_key="acme", raise_on_error=False)
        assert first.success
        assert len(step_retries(first)) == 1
        figures = materialized(first)
        assert (figures["sent"], figures["token_requests"], figures["api_calls"]) == (120, 1, 3)
        assert zuora.counts.calls["/v1/workflows"] - listed_before == 3  # 50 + 50 + 20, the last with no next page
        assert job.execute_in_process(instance=instance, partition_key="beta").success
        stored = table_rows(app, workflows)
        per_customer = {
            customer: sum(row["customer_id"] == customer for row in stored) for customer in ("acme", "beta")
        }
        assert per_customer == {"acme": 120, "beta": 30} and len(stored) == 150

        bad = job.execute_in_process(instance=instance, partition_key="bad", raise_on_error=False)
        assert not bad.success
        assert step_retries(bad) == []  # refused credentials: not worth another attempt
        (letter,) = DeadLetters(log).listed()
        assert (letter.entity_type, letter.attempts) == ("zuora.Workflows/bad", 1)
        assert stranger.client_id in letter.reason and stranger.client_secret not in letter.reason
        alerts = dg.Definitions.merge(defs, shared_definitions())
        with dg.build_sensor_context(instance=instance, resources=alerts.resources) as context:
            tick = alerts.resolve_sensor_def("zuora_sync_alerts").evaluate_tick(context)
        assert "dead_lettered:zuora.Workflows/bad" in (tick.cursor or "")  # one alert, for that customer
        outcome = str(materialized(bad)["outcome"])
        assert stranger.client_id in outcome and stranger.client_secret not in outcome

        (changed,) = zuora.workflow_ids(acme)[5:6]
        zuora.put_workflow(acme, changed, name="Renamed in Zuora")
        again = job.execute_in_process(instance=instance, partition_key="acme")
        figures = materialized(again)
        assert (figures["sent"], figures["unchanged"]) == (1, 119)
        renamed = [row for row in table_rows(app, workflows) if row["zuora_id"] == changed]
        assert [(row["customer_id"], row["name"]) for row in renamed] == [("acme", "Renamed in Zuora")]
        assert figures["deleted"] == 0

        gone = zuora.workflow_ids(acme)[0]
        zuora.delete_workflow(acme, gone)
        after_delete = job.execute_in_process(instance=instance, partition_key="acme")
        assert materialized(after_delete)["deleted"] == 1
        stored = table_rows(app, workflows)
        marked = [(row["customer_id"], row["zuora_id"]) for row in stored if row["deleted_at"] is not None]
        assert marked == [("acme", gone)] and len(stored) == 150  # marked, never removed; beta's rows untouched

    rows = table_rows(log, scheduler_log_table)
    assert {row["Activity"] for row in rows} >= {"Sync Batch: zuora.Workflows/acme", "Sync Batch: zuora.Workflows/beta"}
    for tenant in (acme, beta, stranger):
        assert not any(tenant.client_secret in str(row) for row in rows)
    assert table_rows(log, lock_table) == []  # every customer's lock released
    app.dispose()
    log.dispose()
