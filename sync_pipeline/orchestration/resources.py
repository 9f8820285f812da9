"""Resources for a deployment: secrets only through `EnvVar`, everything else from the settings."""

from __future__ import annotations

import dagster as dg

from sync_pipeline.resources.api_client import HttpSyncApiClient
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import Settings
from sync_pipeline.specs.tamhr import API_KEY_ENV_VAR, DATABASE_URL_ENV_VARS


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The three databases and the API client, keyed as the assets require them."""
    databases: dict[str, dg.ConfigurableResource] = {
        key: SyncDatabase(url=dg.EnvVar(env_var), env_var=env_var) for key, env_var in DATABASE_URL_ENV_VARS.items()
    }
    return {
        **databases,
        "sync_api": HttpSyncApiClient(
            api_key=dg.EnvVar(API_KEY_ENV_VAR),
            api_key_header=settings.api.api_key_header,
            auth_kind=settings.api.auth.kind,
            rate_limit_max_wait_seconds=settings.retries.max_delay_seconds,
            timeout_seconds=settings.api.timeout_seconds,
            call_deadline_seconds=settings.api.deadline_seconds,
            verify_tls=settings.api.verify_tls,
        ),
    }
