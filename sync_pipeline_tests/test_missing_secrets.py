"""A missing secret stops the run before any entity starts, naming the variable, and sends nothing.

Definitions load without secrets (so the UI and CI work without them); Dagster resolves `EnvVar`
when a run starts, which is where a missing one must be caught.
"""

from __future__ import annotations

import dagster as dg
import pytest

from sync_pipeline.definitions import build_definitions
from sync_pipeline.settings import Settings
from sync_pipeline.specs.tamhr import API_KEY_ENV_VAR, DATABASE_URL_ENV_VARS, TAMHR_SYNC

from .conftest import SyncDatabases


@pytest.mark.parametrize("missing", [API_KEY_ENV_VAR, *DATABASE_URL_ENV_VARS.values()])
def test_a_run_without_a_secret_fails_at_start_naming_the_variable(
    missing: str, databases: SyncDatabases, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, env_var in DATABASE_URL_ENV_VARS.items():
        monkeypatch.setenv(env_var, databases.urls[key])
    monkeypatch.setenv(API_KEY_ENV_VAR, "some-key")
    monkeypatch.delenv(missing)
    job = build_definitions(settings).resolve_job_def(TAMHR_SYNC.job_name)

    with pytest.raises(dg.DagsterInvalidConfigError, match=missing):
        job.execute_in_process(instance=dg.DagsterInstance.ephemeral())

    assert databases.tracking_rows() == []
    assert databases.scheduler_log_rows() == []
