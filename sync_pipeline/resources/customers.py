"""The customers of a sync run once per customer: read from their table, each checked before any call.

The customers table lives in one of the sync's databases; the key that decrypts their client
secrets comes from an environment variable (`EnvVar`), like every other secret.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from sync_pipeline.connectors.zuora.customers import (
    CustomerCredentials,
    CustomerProblem,
    SecretBox,
    active_customers,
)
from sync_pipeline.resources.database import SyncDatabase


class CustomerDirectory(dg.ConfigurableResource):
    """Who the active customers are, and each one's checked credentials."""

    database: SyncDatabase
    secret_key: str = Field(
        description="The Fernet key of the customers' client secrets; always `{env: ZUORA_SECRET_KEY}` (or the "
        "variable the settings name), never the key itself.",
    )
    secret_key_env_var: str = Field(default="ZUORA_SECRET_KEY", description="Where `secret_key` comes from.")
    simulator: str | None = Field(
        default=None, description="host:port of a local simulator accepted over http (the demo and tests only)."
    )

    def customers(self) -> list[CustomerCredentials | CustomerProblem]:
        """Every active customer, checked, in customer id order; raises `SourceUnavailable` when the table
        cannot be read and ValueError naming the key's variable when the key is no Fernet key."""
        box = SecretBox(self.secret_key, self.secret_key_env_var)
        return list(active_customers(self.database.get_engine(), box, self.simulator))

    def customer(self, customer_id: str) -> CustomerCredentials | CustomerProblem:
        """One active customer, checked; a problem when it is not (or no longer) an active customer."""
        for checked in self.customers():
            if checked.customer_id == customer_id:
                return checked
        return CustomerProblem(customer_id, ("is not an active customer in the customers table",))
