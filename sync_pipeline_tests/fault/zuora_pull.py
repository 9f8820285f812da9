"""The Zuora workflows pull under faults: the packaged pull (defs/zuora: exports, history, one transaction per
customer's run) run per customer against the local Zuora, into the application's ZUORA_WORKFLOW table on the
real local PostgreSQL, and what a scenario checks after it.

A workflow is lost when the local Zuora holds it and the table lacks it, holds an older version of it
or marks it deleted; a duplicate is a Zuora id stored more than once (ids are unique across tenants);
a misplaced row is one stored under a customer while another customer's tenant holds that workflow.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from sync_pipeline.connectors.zuora.customers import SecretBox, customers_table
from sync_pipeline.connectors.zuora.workflows import workflows_table
from sync_pipeline.demo.packaged import merged
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.demo.zuora import ObservedZuoraSimulator, ZuoraTenant
from sync_pipeline.demo.zuora_seed import (
    create_application_tables,
    customer_row,
    simulator_address,
    zuora_definitions,
    zuora_settings,
)
from sync_pipeline.engine.state.dead_letters import DeadLetter, DeadLetters
from sync_pipeline.engine.tables import log_metadata
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.fault.conftest import FaultLedger
from sync_pipeline_tests.real_db.conftest import fresh_databases, table_rows

PULL_SETTINGS: dict[str, Any] = {
    "api": {"timeout_seconds": 2},
    "retries": {"max_attempts": 3, "initial_delay_seconds": 0.01, "max_delay_seconds": 2, "max_total_wait_seconds": 10},
    "locking": {"lease_seconds": 20, "wait_seconds": 0},
    "progress": {"interval_seconds": 0},
    "customers": {"retry_delays_seconds": [0, 0]},
}
"""The fault scenarios' settings over the packaged ones: quick retries of each call, no lock waits, no progress
lines; a customer's run is tried again twice, at once, for a passing cause."""

JOB = "zuora_sync_job"
PARTITIONS = "zuora_customers"


@dataclass
class ZuoraPull:
    """One application's workflows pulled per customer from the local Zuora; `run` runs one customer's partition."""

    zuora: ObservedZuoraSimulator
    tenants: dict[str, ZuoraTenant]
    env: dict[str, str]
    """The environment the pull reads its databases and key from (for a worker process)."""
    settings: dict[str, Any]
    app: sa.Engine
    log: sa.Engine
    workflows: sa.Table
    defs: dg.Definitions
    instance: dg.DagsterInstance

    def run(self, customer: str) -> dg.ExecuteInProcessResult:
        """One run of the customer's partition, its retries included; a failed run is returned, not raised."""
        return self.defs.resolve_job_def(JOB).execute_in_process(
            instance=self.instance, partition_key=customer, raise_on_error=False
        )

    def rows(self, customer: str | None = None) -> list[dict[str, Any]]:
        """The stored workflows, of one customer or all."""
        return [row for row in table_rows(self.app, self.workflows) if customer in (None, row["customer_id"])]

    def lost(self) -> list[tuple[str, int]]:
        """(customer, id) of each workflow the local Zuora holds that the table lacks, holds older or marks deleted."""
        stored = {(row["customer_id"], row["zuora_id"]): row for row in self.rows()}
        lost = []
        for customer, tenant in self.tenants.items():
            for workflow in self.zuora.workflows(tenant):
                workflow_id = workflow["id"]
                row = stored.get((customer, workflow_id))
                if (
                    row is None
                    or row["deleted_at"] is not None
                    or row["updated_at"] < zuora_time(workflow["updatedAt"])
                ):
                    lost.append((customer, workflow_id))
        return lost

    def duplicates(self) -> int:
        """Rows beyond the first of each Zuora id."""
        ids = [row["zuora_id"] for row in self.rows()]
        return len(ids) - len(set(ids))

    def misplaced(self) -> list[tuple[str, int]]:
        """(customer, id) of each row of a workflow that another customer's tenant holds."""
        holder = {
            workflow_id: customer
            for customer, tenant in self.tenants.items()
            for workflow_id in self.zuora.workflow_ids(tenant)
        }
        return [
            (row["customer_id"], row["zuora_id"])
            for row in self.rows()
            if holder.get(row["zuora_id"], row["customer_id"]) != row["customer_id"]
        ]

    def marked_deleted(self, customer: str) -> set[int]:
        """The customer's workflows the table marks deleted."""
        return {row["zuora_id"] for row in self.rows(customer) if row["deleted_at"] is not None}

    def dead_letters(self) -> list[DeadLetter]:
        """The customers' runs that failed for good."""
        return DeadLetters(self.log).listed()

    def outputs(self) -> dict[str, str]:
        """Everything the runs left to read: each run's event log (messages, errors, metadata), every Log
        table and the application's tables."""
        outputs = {
            f"event log of run {run.run_id}": "\n".join(repr(entry) for entry in self.instance.all_logs(run.run_id))
            for run in self.instance.get_runs()
        }
        for table in log_metadata.sorted_tables:
            outputs[f"Log table {table.name}"] = repr(table_rows(self.log, table))
        for table in (self.workflows, customers_table):
            outputs[f"application table {table.name}"] = repr(table_rows(self.app, table))
        return outputs


@contextmanager
def zuora_pull(
    monkeypatch: pytest.MonkeyPatch,
    workflows: Mapping[str, int],
    settings: Mapping[str, Any] | None = None,
    **simulator: Any,
) -> Iterator[ZuoraPull]:
    """A local Zuora with a tenant per customer (`workflows` of each), the customers and workflows tables and
    the Log tables on fresh PostgreSQL databases, and the pull declared over them, its partitions added."""
    with fresh_databases("postgresql", ("app_db", "log_db")) as urls, ObservedZuoraSimulator(**simulator) as zuora:
        key = Fernet.generate_key().decode()
        env = {"ZUORA_APP_DB_URL": urls["app_db"], "SYNC_LOG_DB_URL": urls["log_db"], "ZUORA_SECRET_KEY": key}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        app, log = create_sync_engine(urls["app_db"]), create_sync_engine(urls["log_db"])
        create_log_tables(log)
        create_application_tables(app)
        tenants = {customer: zuora.add_tenant(customer, workflows=count) for customer, count in workflows.items()}
        address = simulator_address(zuora)
        box = SecretBox(key, "ZUORA_SECRET_KEY")
        with app.begin() as conn:
            rows = [customer_row(box, customer, tenant, f"http://{address}") for customer, tenant in tenants.items()]
            conn.execute(sa.insert(customers_table), rows)
        chosen = merged(PULL_SETTINGS, settings or {})
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions(PARTITIONS, list(tenants))
        defs = zuora_definitions(zuora_settings(address, chosen))
        pull = ZuoraPull(zuora, tenants, env, chosen, app, log, workflows_table, defs, instance)
        try:
            yield pull
        finally:
            instance.dispose()
            app.dispose()
            log.dispose()


def settle(
    pull: ZuoraPull, ledger: FaultLedger, capfd: pytest.CaptureFixture[str], more: Mapping[str, str] | None = None
) -> None:
    """Record what a scenario left after its final clean run: workflows lost, and every client secret and
    token found anywhere the runs wrote or printed (`more`: other outputs, a worker's log)."""
    ledger.records_lost += len(pull.lost())
    outputs = {**pull.outputs(), **printed(capfd), **(more or {})}
    secrets = pull.zuora.issued_secrets()
    assert len(secrets) > len(pull.tenants), "the tokens issued are searched for too"
    assert all(any(tenant.client_id in text for text in outputs.values()) for tenant in pull.tenants.values())
    assert ledger.search_for_secrets(outputs, secrets) == []
    assert pull.lost() == [], "a workflow is missing, older than in Zuora, or marked deleted"
    assert pull.duplicates() == 0 and pull.misplaced() == []


def zuora_time(stamp: str) -> dt.datetime:
    """Zuora's `updatedAt` text as the table stores it: UTC, without an offset."""
    return dt.datetime.fromisoformat(stamp).astimezone(dt.UTC).replace(tzinfo=None)


def printed(capfd: pytest.CaptureFixture[str]) -> dict[str, str]:
    """What the test's process has printed so far, to stdout and stderr."""
    captured = capfd.readouterr()
    return {"stdout": captured.out, "stderr": captured.err}
