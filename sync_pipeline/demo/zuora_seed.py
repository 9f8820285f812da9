"""The Zuora pull's application database for the demo and the tests: its customers and workflows tables,
customers pointed at a local Zuora, and the packaged declaration run with settings of their own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import dagster as dg
import sqlalchemy as sa

from sync_pipeline.connectors.zuora.customers import SecretBox, customers_metadata, customers_table
from sync_pipeline.connectors.zuora.workflows import workflows_metadata
from sync_pipeline.demo.packaged import merged, packaged_definitions, packaged_settings
from sync_pipeline.demo.zuora import ZuoraSimulator, ZuoraTenant


def create_application_tables(engine: sa.Engine) -> None:
    """The customers and workflows tables, as the application would have them (nothing else)."""
    customers_metadata.create_all(engine)
    workflows_metadata.create_all(engine)


def customer_row(box: SecretBox, customer_id: str, tenant: ZuoraTenant, base_url: str) -> dict[str, Any]:
    """A customers-table row for a tenant of the simulator: its client, the secret encrypted, active."""
    return {
        "CustomerId": customer_id,
        "Name": customer_id.title(),
        "ClientId": tenant.client_id,
        "ClientSecretEncrypted": box.encrypt(tenant.client_secret),
        "BaseUrl": base_url,
        "Active": True,
        "ModifiedOn": dt.datetime(2026, 12, 1),
    }


def add_customers(engine: sa.Engine, box: SecretBox, zuora: ZuoraSimulator, tenants: Mapping[str, ZuoraTenant]) -> None:
    """One active customer per tenant, each with the simulator as its Zuora."""
    base_url = f"http://{simulator_address(zuora)}"
    with engine.begin() as conn:
        conn.execute(sa.insert(customers_table), [customer_row(box, name, t, base_url) for name, t in tenants.items()])


def simulator_address(zuora: ZuoraSimulator) -> str:
    """The local Zuora's host:port, as `customers.simulator` and the customers' base URLs name it."""
    return zuora.base_url.removesuffix("/v1").removeprefix("http://")


def zuora_settings(address: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The packaged settings with the local Zuora at `address` (host:port) allowed as the customers' Zuora,
    `changes` laid over them (see `merged`)."""
    return merged(packaged_settings("zuora", {"customers": {"simulator": address}}), changes or {})


def zuora_definitions(settings: Mapping[str, Any]) -> dg.Definitions:
    """The packaged Zuora pull's definitions under these settings."""
    return packaged_definitions("zuora", settings)
