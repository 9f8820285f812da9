"""The packaged Zuora pull set up against the local Zuora: one customer, its databases, its job."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from sync_pipeline.connectors.zuora.customers import SecretBox
from sync_pipeline.connectors.zuora.workflows import workflows_table
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.demo.zuora import ZuoraSimulator, ZuoraTenant
from sync_pipeline.demo.zuora_seed import (
    add_customers,
    create_application_tables,
    simulator_address,
    zuora_definitions,
    zuora_settings,
)
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.real_db.conftest import table_rows


@dataclass
class Pull:
    """A local Zuora with one customer (`acme`), its databases, and its job."""

    zuora: ZuoraSimulator
    acme: ZuoraTenant
    app: sa.Engine
    log: sa.Engine
    defs: dg.Definitions
    instance: dg.DagsterInstance

    def run(self) -> dg.ExecuteInProcessResult:
        """One run of acme's partition."""
        job = self.defs.resolve_job_def("zuora_sync_job")
        return job.execute_in_process(instance=self.instance, partition_key="acme", raise_on_error=False)

    def rows(self) -> dict[int, dict[str, Any]]:
        """acme's stored workflows by Zuora id."""
        return {row["zuora_id"]: row for row in table_rows(self.app, workflows_table) if row["customer_id"] == "acme"}

    def exports_called(self) -> int:
        """Export calls the simulator answered so far."""
        return sum(count for route, count in self.zuora.counts.calls.items() if route.endswith("/export"))


@contextmanager
def zuora_pull(urls: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, workflows: int = 60) -> Iterator[Pull]:
    """acme's pull with `workflows` workflows in the local Zuora, into the databases at `urls` (`app`, `log`):
    two attempts per call, no retry of a failed run, a batch per page."""
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("ZUORA_APP_DB_URL", urls["app"])
    monkeypatch.setenv("SYNC_LOG_DB_URL", urls["log"])
    monkeypatch.setenv("ZUORA_SECRET_KEY", key)
    app, log = create_sync_engine(urls["app"]), create_sync_engine(urls["log"])
    create_application_tables(app)
    create_log_tables(log)
    with ZuoraSimulator() as zuora:
        acme = zuora.add_tenant("acme", workflows=workflows)
        add_customers(app, SecretBox(key, "ZUORA_SECRET_KEY"), zuora, {"acme": acme})
        changes = {
            "retries": {"max_attempts": 2, "initial_delay_seconds": 0.01},
            "customers": {"retry_delays_seconds": []},
            "entities": {"Workflows": {"batch_size": 50}},  # a page a batch: a run that fails has written some
        }
        settings = zuora_settings(simulator_address(zuora), changes)
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("zuora_customers", ["acme"])
        yield Pull(zuora, acme, app, log, zuora_definitions(settings), instance)
    app.dispose()
    log.dispose()
