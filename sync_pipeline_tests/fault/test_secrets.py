"""After a run full of failures, the API key and the database passwords appear nowhere."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml

from sync_pipeline.demo.receiver import Fault, ReceivingApi
from sync_pipeline.demo.seed import seed_entity
from sync_pipeline.engine.tables import log_metadata, rejected_table, scheduler_log_table
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import SETTINGS_ENV_VAR
from sync_pipeline.specs.tamhr import API_KEY_ENV_VAR, DATABASE_URL_ENV_VARS, TAMHR_ENTITIES
from sync_pipeline_tests.fault.conftest import FaultLedger, fault_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def with_password(url: str, password: str) -> str:
    """PostgreSQL here trusts local users, so a password in the URL is carried but never checked."""
    return sa.make_url(url).set(password=password).render_as_string(hide_password=False)


def test_a_failing_run_leaks_no_secret_to_output_event_log_tables_or_metadata(
    pg_urls: dict[str, str], tmp_path: Path, ledger: FaultLedger
) -> None:
    api_key = f"sk-live-{secrets.token_hex(12)}"
    password = f"Pw-{secrets.token_hex(10)}"
    with ReceivingApi(api_key) as receiver:
        settings = fault_settings(receiver, batch_size=4)
        for spec in TAMHR_ENTITIES[:4]:
            engine = create_sync_engine(pg_urls[spec.source_db])
            seed_entity(engine, spec, settings.entities[spec.name], 10)
            engine.dispose()
        log_engine = create_sync_engine(pg_urls["log_db"])
        log_metadata.create_all(log_engine)
        receiver.fail_calls("users", {n: 500 for n in range(1, 5)})  # batch 1 fails on every attempt
        receiver.fail_calls("actual-organization-structures", {1: Fault(422), 2: Fault(422), 3: Fault(422)})
        # receivers that echo the request's headers, the API key among them, in their error bodies
        echoing = {"ActualEntity": 401, "OrgObject": 400}
        for name, status in echoing.items():
            receiver.fail_calls(
                settings.entities[name].endpoint, {n: Fault(status, echo_headers=True) for n in range(1, 40)}
            )
        settings_file = tmp_path / "settings.yaml"
        settings_file.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
        env = {
            **os.environ,
            SETTINGS_ENV_VAR: str(settings_file),
            API_KEY_ENV_VAR: api_key,
            "DAGSTER_HOME": str(tmp_path),
            **{env_var: with_password(pg_urls[key], password) for key, env_var in DATABASE_URL_ENV_VARS.items()},
            DATABASE_URL_ENV_VARS["ess_db"]: f"postgresql+psycopg://sync:{password}@127.0.0.1:1/ess",
        }
        dagster = str(Path(sys.executable).with_name("dagster"))
        completed = subprocess.run(
            [dagster, "job", "execute", "-m", "sync_pipeline.definitions", "-j", "tamhr_sync_job"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        (run,) = instance.get_runs()
        event_log = "\n".join(repr(record) for record in instance.all_logs(run.run_id))
    with log_engine.connect() as conn:
        scheduler_log = [dict(row) for row in conn.execute(sa.select(scheduler_log_table)).mappings()]
        rejected = [dict(row) for row in conn.execute(sa.select(rejected_table)).mappings()]
    log_engine.dispose()
    outputs = {
        "stdout": completed.stdout,
        "stderr": completed.stderr,
        "event log and metadata": event_log,
        "SchedulerLog": repr(scheduler_log),
        "TB_R_SYNC_REJECTED": repr(rejected),
    }
    hits = ledger.search_for_secrets(outputs, (api_key, password))

    assert any(row["Status"] == "Failure" for row in scheduler_log), "the run must have failed calls to scan"
    assert rejected and "ASSET_CHECK_EVALUATION" in event_log and "cannot read" in event_log
    assert "***" in event_log, "URLs are shown, but masked"
    assert hits == []
    assert any("[redacted]" in (row["ExceptionMessage"] or "") for row in scheduler_log), "a 401 echoed the key"
    assert any("[redacted]" in (row["ResponseExcerpt"] or "") for row in rejected), "a 400 echoed the key"
