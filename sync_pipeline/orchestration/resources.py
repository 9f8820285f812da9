"""A sync's resources: secrets only through `EnvVar`, everything else from its settings."""

from __future__ import annotations

import dagster as dg

from sync_pipeline.resources.api_client import HttpSyncApiClient
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import Settings
from sync_pipeline.specs.sync import SyncSpec


def build_resources(sync: SyncSpec, settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The sync's databases (each URL from the variable its settings name) and API client, keyed as its
    assets require them."""
    databases: dict[str, dg.ConfigurableResource] = {
        sync.resource_key(key): SyncDatabase(url=dg.EnvVar(env_var), env_var=env_var)
        for key, env_var in settings.databases.items()
    }
    return {
        **databases,
        sync.resource_key("sync_api"): HttpSyncApiClient(
            api_key=dg.EnvVar(settings.api.api_key_env_var),
            api_key_header=settings.api.api_key_header,
            auth_kind=settings.api.auth.kind,
            rate_limit_max_wait_seconds=settings.retries.max_delay_seconds,
            timeout_seconds=settings.api.timeout_seconds,
            call_deadline_seconds=settings.api.deadline_seconds,
            verify_tls=settings.api.verify_tls,
        ),
    }
