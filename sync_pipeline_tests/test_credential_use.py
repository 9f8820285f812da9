"""Each use of a customer's credentials is logged in TB_R_SYNC_CREDENTIAL_USE (customer, when, token requested,
refreshed or reused, with its calls, which run), never the secret or a token; a Log database that cannot
be written leaves a warning and the pull goes on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_pipeline.connectors.zuora.customers import CustomerCredentials
from sync_pipeline.demo.zuora import ZuoraSimulator, ZuoraTenant
from sync_pipeline.engine.audit.credential_log import CredentialUseLog, CredentialUser
from sync_pipeline.engine.http.credential_use import CredentialUse
from sync_pipeline.engine.http.oauth import ClientCredentials, TokenCounts
from sync_pipeline.engine.http.transport import Transport
from sync_pipeline.engine.tables import credential_use_table
from sync_pipeline.orchestration.component import SyncComponent
from sync_pipeline.orchestration.customers import run_credentials
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import parse_settings

from .conftest import SyncDatabases
from .customer_pull import pull_attributes, pull_databases, pull_definitions, sqlite_urls
from .real_db.conftest import table_rows
from .test_oauth import QUICK_RETRIES, read_pages
from .test_transport import FakeClock

ACME = CredentialUser("zuora.Workflows/acme", "acme", "", "run-1")
LOG = logging.getLogger("sync_pipeline_tests.credential_use")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def zuora(clock: FakeClock) -> Iterator[ZuoraSimulator]:
    with ZuoraSimulator(clock=clock.now) as simulator:
        yield simulator


@pytest.fixture
def log_db(databases: SyncDatabases) -> sa.Engine:
    """A Log database with its tables (SQLite)."""
    return databases.log


def credentials(zuora: ZuoraSimulator, tenant: ZuoraTenant, clock: FakeClock) -> ClientCredentials:
    return ClientCredentials(
        zuora.token_url, tenant.client_id, tenant.client_secret, retry_policy=QUICK_RETRIES, clock=clock.now
    )


def use_of(auth: ClientCredentials, log_db: sa.Engine, tenant: ZuoraTenant, run_id: str = "run-1") -> CredentialUse:
    user = CredentialUser(ACME.entity_type, ACME.customer, tenant.client_id, run_id)
    return CredentialUse(auth, CredentialUseLog(log_db, user, LOG))


def logged(log_db: sa.Engine) -> list[tuple[str, int, str | None]]:
    """(Event, Calls, RunId) of every row, in the order written."""
    rows = sorted(table_rows(log_db, credential_use_table), key=lambda row: row["Id"])
    return [(row["Event"], row["Calls"], row["RunId"]) for row in rows]


def test_a_sixty_page_pull_logs_one_requested_token_and_its_sixty_calls(
    zuora: ZuoraSimulator, clock: FakeClock, log_db: sa.Engine
) -> None:
    acme = zuora.add_tenant("acme", workflows=3000)
    use = use_of(credentials(zuora, acme, clock), log_db, acme)

    assert read_pages(Transport(use), zuora) == [200] * 60
    use.close()

    assert logged(log_db) == [("requested", 60, "run-1")]
    (row,) = table_rows(log_db, credential_use_table)
    assert (row["EntityType"], row["Customer"], row["ClientId"]) == ("zuora.Workflows/acme", "acme", acme.client_id)
    assert use.counts == TokenCounts(requests=1, issued=1)


def test_a_token_revoked_mid_run_logs_one_refresh_carrying_the_calls_after_it(
    zuora: ZuoraSimulator, clock: FakeClock, log_db: sa.Engine
) -> None:
    acme = zuora.add_tenant("acme", workflows=3000)
    use = use_of(credentials(zuora, acme, clock), log_db, acme)

    statuses = read_pages(Transport(use), zuora, between_pages=30, then=lambda: zuora.revoke_tokens(acme))
    use.close()

    assert statuses == [200] * 60
    assert logged(log_db) == [("requested", 31, "run-1"), ("refreshed", 30, "run-1")]  # the 31st was refused


def test_a_token_renewed_before_it_expires_is_logged_as_requested_again(
    zuora: ZuoraSimulator, clock: FakeClock, log_db: sa.Engine
) -> None:
    acme = zuora.add_tenant("acme", workflows=1)
    use = use_of(credentials(zuora, acme, clock), log_db, acme)
    transport = Transport(use)
    transport.request("GET", f"{zuora.base_url}/workflows")
    clock.sleep(3600)  # Zuora's tokens live 3599 s
    transport.request("GET", f"{zuora.base_url}/workflows")
    transport.request("GET", f"{zuora.base_url}/workflows")
    use.close()

    assert logged(log_db) == [("requested", 1, "run-1"), ("requested", 2, "run-1")]


def test_a_later_use_of_credentials_whose_token_is_in_force_logs_it_reused_and_requests_none(
    zuora: ZuoraSimulator, clock: FakeClock, log_db: sa.Engine
) -> None:
    acme = zuora.add_tenant("acme", workflows=120)
    auth = credentials(zuora, acme, clock)
    first = use_of(auth, log_db, acme)
    read_pages(Transport(first), zuora)
    first.close()
    second = use_of(auth, log_db, acme)

    assert read_pages(Transport(second), zuora) == [200] * 3
    second.close()

    assert logged(log_db) == [("requested", 3, "run-1"), ("reused", 3, "run-1")]
    assert second.counts == TokenCounts(requests=0, issued=0)
    assert zuora.counts.token_requests[acme.client_id] == 1


def test_the_credential_use_log_holds_neither_the_client_secret_nor_any_token(
    zuora: ZuoraSimulator, clock: FakeClock, log_db: sa.Engine
) -> None:
    acme = zuora.add_tenant("acme", workflows=3000)
    auth = credentials(zuora, acme, clock)
    use = use_of(auth, log_db, acme)
    read_pages(Transport(use), zuora, between_pages=10, then=lambda: zuora.revoke_tokens(acme))
    use.close()

    secrets = auth.secrets()
    assert len(secrets) == 3  # the client secret and two tokens
    rows = table_rows(log_db, credential_use_table)
    assert len(rows) == 2
    for secret in secrets:
        assert not any(secret in str(value) for row in rows for value in row.values())


def test_a_log_database_that_cannot_be_written_leaves_a_warning_and_the_pull_goes_on(
    zuora: ZuoraSimulator, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acme = zuora.add_tenant("acme", workflows=120)
    tableless = create_sync_engine(f"sqlite:///{tmp_path}/empty.sqlite")
    auth = credentials(zuora, acme, clock)
    use = use_of(auth, tableless, acme)

    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert read_pages(Transport(use), zuora) == [200] * 3
        use.close()

    (warning,) = [record.getMessage() for record in caplog.records]
    assert "zuora.Workflows/acme: cannot log a requested token in TB_R_SYNC_CREDENTIAL_USE, the calls go on" in warning
    assert not any(secret in warning for secret in auth.secrets())
    tableless.dispose()


def test_a_run_keeps_its_customers_credentials_for_its_later_attempts_and_entities_only(
    zuora: ZuoraSimulator,
) -> None:
    acme = zuora.add_tenant("acme")
    attributes = pull_attributes(zuora, ["Workflows"])
    sync = SyncComponent.resolve_from_dict(attributes).sync_spec(Path("defs.yaml"))
    settings = parse_settings(attributes["settings"], sync=sync)
    checked = CustomerCredentials("acme", acme.client_id, acme.client_secret, "http://h", "sandbox", "local")
    rotated = CustomerCredentials("acme", acme.client_id, "another-secret-1", "http://h", "sandbox", "local")

    kept = run_credentials(sync, "run-1", checked, settings)

    assert run_credentials(sync, "run-1", checked, settings) is kept
    assert run_credentials(sync, "run-2", checked, settings) is not kept
    assert run_credentials(sync, "run-2", rotated, settings) is not run_credentials(sync, "run-2", checked, settings)


def test_a_customers_run_logs_its_token_requested_by_its_first_entity_and_reused_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entities = ("Workflows", "WorkflowCopies")
    with ZuoraSimulator() as zuora, pull_databases(sqlite_urls(tmp_path), monkeypatch, entities) as databases:
        acme = zuora.add_tenant("acme", workflows=120)
        databases.add_customer("acme", acme, zuora)
        defs = pull_definitions(zuora, entities)
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("zuora_customers", ["acme"])

        result = defs.resolve_job_def("zuora_sync_job").execute_in_process(instance=instance, partition_key="acme")

        assert result.success
        rows = sorted(table_rows(databases.log, credential_use_table), key=lambda row: row["Id"])
        assert [(row["EntityType"], row["Event"], row["Calls"], row["RunId"]) for row in rows] == [
            ("zuora.Workflows/acme", "requested", 3, result.run_id),
            ("zuora.WorkflowCopies/acme", "reused", 3, result.run_id),
        ]
        assert zuora.counts.token_requests[acme.client_id] == 1
        assert token_requests_by_asset(result) == {"zuora_workflows": 1, "zuora_workflow_copies": 0}
        assert not any(acme.client_secret in str(row) for row in rows)


def token_requests_by_asset(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """The `token_requests` figure of each materialization of the run, by asset name."""
    materializations = [event.materialization for event in result.get_asset_materialization_events()]
    return {m.asset_key.path[-1]: m.metadata["token_requests"].value for m in materializations}
