"""A sync's resources: secrets only through `EnvVar`, everything else from its settings."""

from __future__ import annotations

import dagster as dg

from sync_pipeline.resources.api_client import HttpSyncApiClient
from sync_pipeline.resources.customers import CustomerDirectory
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.resources.praxedo_client import PraxedoApiClient
from sync_pipeline.settings import ApiSettings, BasicAuth, Settings, SettingsError
from sync_pipeline.specs.sync import SyncSpec

CUSTOMERS = "customers"
"""The resource key (before the sync's namespace) of a per-customer sync's customer directory."""


def build_resources(sync: SyncSpec, settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The sync's databases (each URL from the variable its settings name) and API client (if it has an API),
    keyed as its assets require them."""
    databases: dict[str, SyncDatabase] = {
        sync.resource_key(key): SyncDatabase(url=dg.EnvVar(env_var), env_var=env_var)
        for key, env_var in settings.databases.items()
    }
    customers = settings.customers
    if customers is not None:  # each customer's API client is built in its run, from its credentials
        directory = CustomerDirectory(
            database=databases[sync.resource_key(customers.db)],
            secret_key=dg.EnvVar(customers.secret_key_env_var),
            secret_key_env_var=customers.secret_key_env_var,
            simulator=customers.simulator,
        )
        return {**databases, sync.resource_key(CUSTOMERS): directory}
    api = settings.api
    if api is None:  # a sync between databases
        return dict(databases)
    auth = api.auth
    if isinstance(auth, BasicAuth):  # Praxedo's web-service user: settings allow basic with no other protocol
        praxedo = PraxedoApiClient(
            username=auth.username,
            password=dg.EnvVar(api.api_key_env_var),
            password_env_var=api.api_key_env_var,
            rate_limit_max_wait_seconds=settings.retries.max_delay_seconds,
            timeout_seconds=api.timeout_seconds,
            call_deadline_seconds=api.deadline_seconds,
            verify_tls=api.verify_tls,
        )
        return {**databases, sync.resource_key("sync_api"): praxedo, **_named_apis(sync, settings)}
    return {**databases, sync.resource_key("sync_api"): _rest_client(api, settings), **_named_apis(sync, settings)}


def api_resource_key(name: str | None) -> str:
    """The resource key (before the sync's namespace) of the API an entity names: `sync_api` for the sync's
    own, `<name>_api` for one of `apis`."""
    return "sync_api" if name is None else f"{name}_api"


def _named_apis(sync: SyncSpec, settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """A client for each of the sync's other APIs (`apis`: CHR's beside Praxedo)."""
    return {
        sync.resource_key(api_resource_key(name)): _rest_client(api, settings) for name, api in settings.apis.items()
    }


def _rest_client(api: ApiSettings, settings: Settings) -> HttpSyncApiClient:
    """A REST API's client, its secret from the variable its settings name."""
    auth = api.auth
    if isinstance(auth, BasicAuth):  # the settings allow basic only with protocol praxedo
        raise SettingsError("api.auth.kind: basic is only read with api.protocol praxedo")
    return HttpSyncApiClient(
        api_key=dg.EnvVar(api.api_key_env_var),
        api_key_env_var=api.api_key_env_var,
        api_key_header=api.api_key_header,
        auth_kind=auth.kind,
        rate_limit_max_wait_seconds=settings.retries.max_delay_seconds,
        timeout_seconds=api.timeout_seconds,
        call_deadline_seconds=api.deadline_seconds,
        verify_tls=api.verify_tls,
    )
