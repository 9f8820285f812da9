"""A Zuora workflows pull run once per customer, declared in YAML, over any application and Log database.

The local Zuora serves the customers' tokens and pages; each customer is a row of the application's
customers table with its client secret Fernet-encrypted; every entity upserts into a table of its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from sync_pipeline.connectors.zuora.customers import SecretBox, customers_metadata, customers_table
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.demo.zuora import ZuoraSimulator, ZuoraTenant
from sync_pipeline.engine.tables import DateTime2
from sync_pipeline.orchestration.component import SyncComponent
from sync_pipeline.resources.database import create_sync_engine

SECRET_KEY_ENV_VAR = "ZUORA_SECRET_KEY"


def pull_entity(name: str) -> dict[str, Any]:
    """One entity reading the workflow pages (50 a page, next-page links) into its own table."""
    return {
        "name": name,
        "source": {
            "kind": "http_pages",
            "pagination": {
                "style": "next_link",
                "next_path": "pagination.next_page",
                "size_param": "page_length",
                "page_size": 50,
                "records_path": "data",
            },
        },
        "fields": [
            {"name": "id", "type": "int"},
            {"name": "name", "length": 200},
            {"name": "updatedAt", "type": "datetime"},
        ],
        "mapping": {"zuora_id": {"from": "id"}, "name": {"from": "name"}, "updated_at": {"from": "updatedAt"}},
        "state": "none",
        "sink": {
            "kind": "sql_upsert",
            "db": "app_db",
            "key_columns": ["customer_id", "zuora_id"],
            "timestamp_column": "updated_at",
            "partition_column": "customer_id",
        },
    }


def pull_attributes(simulator: ZuoraSimulator, entities: Sequence[str], **settings: Any) -> dict[str, Any]:
    """The `zuora` SyncComponent's attributes: `entities` each pulled into `app_<entity>`; `settings` added."""
    host = simulator.base_url.removesuffix("/v1").removeprefix("http://")
    return {
        "name": "zuora",
        "entities": [pull_entity(name) for name in entities],
        "settings": {
            "api": {},
            "customers": {"db": "app_db", "simulator": host, "retry_delays_seconds": [0, 0]},
            "retries": {"max_attempts": 1},
            "databases": {"app_db": "APP_DB_URL", "log_db": "SYNC_LOG_DB_URL"},
            "entities": {
                name: {"key_column": "id", "endpoint": "v1/workflows", "target_table": f"app_{name.lower()}"}
                for name in entities
            },
            **settings,
        },
    }


def pull_definitions(
    simulator: ZuoraSimulator, entities: Sequence[str] = ("Workflows",), **settings: Any
) -> dg.Definitions:
    """The pull's definitions, as `dg` loads a defs.yaml of them."""
    return dg.build_defs_for_component(
        SyncComponent.resolve_from_dict(pull_attributes(simulator, entities, **settings))
    )


@dataclass
class PullDatabases:
    """The application's database (customers, one table per entity) and the Log database, ready."""

    app: sa.Engine
    log: sa.Engine
    box: SecretBox

    def add_customer(self, customer_id: str, tenant: ZuoraTenant, simulator: ZuoraSimulator) -> None:
        """An active customer with the tenant's credentials at the simulator."""
        with self.app.begin() as conn:
            conn.execute(
                sa.insert(customers_table).values(
                    CustomerId=customer_id,
                    Name=customer_id.title(),
                    ClientId=tenant.client_id,
                    ClientSecretEncrypted=self.box.encrypt(tenant.client_secret),
                    BaseUrl=simulator.base_url.removesuffix("/v1"),
                    Active=True,
                    ModifiedOn=dt.datetime(2026, 12, 1),
                )
            )


@contextmanager
def pull_databases(
    urls: dict[str, str], monkeypatch: pytest.MonkeyPatch, entities: Sequence[str] = ("Workflows",)
) -> Iterator[PullDatabases]:
    """Create the tables in `urls` (`app_db`, `log_db`) and set the variables the pull's resources read."""
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("APP_DB_URL", urls["app_db"])
    monkeypatch.setenv("SYNC_LOG_DB_URL", urls["log_db"])
    monkeypatch.setenv(SECRET_KEY_ENV_VAR, key)
    app, log = create_sync_engine(urls["app_db"]), create_sync_engine(urls["log_db"])
    create_log_tables(log)
    customers_metadata.create_all(app)
    targets = sa.MetaData()
    for name in entities:
        sa.Table(
            f"app_{name.lower()}",
            targets,
            sa.Column("customer_id", sa.String(100), primary_key=True),
            sa.Column("zuora_id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("updated_at", DateTime2, nullable=True),
        )
    targets.create_all(app)
    try:
        yield PullDatabases(app, log, SecretBox(key, SECRET_KEY_ENV_VAR))
    finally:
        app.dispose()
        log.dispose()


def sqlite_urls(folder: Path) -> dict[str, str]:
    """`app_db` and `log_db` as SQLite files in `folder`."""
    return {key: f"sqlite:///{folder}/{key}.sqlite" for key in ("app_db", "log_db")}
