"""The embedded default end to end: seed SQLite, start the receiver, the local Zuora and the local Praxedo,
run the TAMHR job, the Zuora pull for every demo customer and the CHR -> Praxedo syncs, print their summaries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa
import yaml

from sync_pipeline.definitions import build_definitions
from sync_pipeline.demo.field_service_demo import (
    FieldServiceDemoFiles,
    prepare_field_service,
    run_field_service,
    running_praxedo,
    technicians_day,
)
from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.demo.seed import create_log_tables, seed_entity
from sync_pipeline.demo.zuora_demo import ZuoraDemoFiles, prepare_zuora, run_zuora_pull, running_zuora
from sync_pipeline.engine.tables import tracking_table
from sync_pipeline.orchestration.sync_assets import CHECK_NAME
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import DEFAULT_SETTINGS_PATH, SETTINGS_ENV_VAR, load_settings
from sync_pipeline.specs.tamhr import API_KEY_ENV_VAR, DATABASE_URL_ENV_VARS, TAMHR_ENTITIES, TAMHR_SYNC

DEMO_ROWS = {"Users": 5000, "ActualOrg": 3000, "ActualEntity": 2500, "OrgObject": 4000, "EventsCalendar": 1500}
DEMO_API_KEY = "demo-only-key"  # the local receiver's key; real keys come from SYNC_API_KEY
DEFAULT_PORT = 8765
DEFAULT_UI_PORT = 3000
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""The demo prints its own summary; the run's event log keeps every event for the UI."""


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo keeps its databases, its settings file and Dagster's storage."""

    workdir: Path

    def database_url(self, resource_key: str) -> str:
        """`sqlite:///…/default.db` for `default_db`, and so on."""
        return f"sqlite:///{(self.workdir / resource_key.removesuffix('_db')).resolve()}.db"

    @property
    def settings_file(self) -> Path:
        """The demo's settings: the packaged defaults, pointed at the receiver's port."""
        return self.workdir / "settings.yaml"

    @property
    def zuora(self) -> ZuoraDemoFiles:
        """The Zuora pull's files: its application database, secret key, settings and tenants."""
        return ZuoraDemoFiles(self.workdir)

    @property
    def field_service(self) -> FieldServiceDemoFiles:
        """The field-service syncs' files: CHR's database, what the local Praxedo holds, the settings."""
        return FieldServiceDemoFiles(self.workdir)

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME for the demo, unless the caller set one."""
        return self.workdir / "dagster_home"


def prepare(paths: DemoPaths, port: int, ui_port: int = DEFAULT_UI_PORT) -> bool:
    """Write the demo settings (the receiver's port, alert links to the UI's port) and, the first
    time, seed the databases and the Zuora customers; True if it seeded."""
    paths.workdir.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(DEFAULT_SETTINGS_PATH.read_text(encoding="utf-8"))
    raw["api"]["base_url"] = f"http://127.0.0.1:{port}/api/sync/"
    raw.setdefault("alerts", {})["ui_base_url"] = f"http://127.0.0.1:{ui_port}"
    paths.settings_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    seeded_before = Path(paths.database_url("log_db").removeprefix("sqlite:///")).exists()
    engine = create_sync_engine(paths.database_url("log_db"))
    create_log_tables(engine)  # also adds tables a newer version introduced
    engine.dispose()
    prepare_zuora(paths.zuora, port, ui_port)
    prepare_field_service(paths.field_service, port, ui_port)
    if seeded_before:
        return False
    settings = load_settings(paths.settings_file)
    for spec in TAMHR_ENTITIES:
        assert spec.source_db is not None  # every TAMHR entity reads a table
        engine = create_sync_engine(paths.database_url(spec.source_db))
        seed_entity(engine, spec, settings.entities[spec.name], DEMO_ROWS[spec.name])
        engine.dispose()
    return True


def environment(paths: DemoPaths) -> dict[str, str]:
    """The environment variables a run of the demo needs."""
    env = {env_var: paths.database_url(key) for key, env_var in DATABASE_URL_ENV_VARS.items()}
    env[API_KEY_ENV_VAR] = DEMO_API_KEY
    env[SETTINGS_ENV_VAR] = str(paths.settings_file.resolve())
    env.update(paths.zuora.environment())
    env.update(paths.field_service.environment())
    env.setdefault("DAGSTER_HOME", os.environ.get("DAGSTER_HOME") or str(paths.dagster_home.resolve()))
    return env


@contextmanager
def running_receiver(port: int) -> Iterator[ReceivingApi]:
    """The receiving API on 127.0.0.1:`port`, with a clear message when the port is taken."""
    try:
        api = ReceivingApi(DEMO_API_KEY, port=port)
    except OSError as exc:
        raise SystemExit(f"cannot start the demo receiver on 127.0.0.1:{port} ({exc.strerror}); use --port") from None
    with api:
        yield api


def summary(result: dg.ExecuteInProcessResult) -> pd.DataFrame:
    """One row per entity: the materialization's figures and the check's verdict."""
    checks = {
        ev.asset_check_key.asset_key: ev.passed
        for ev in result.get_asset_check_evaluations()
        if ev.check_name == CHECK_NAME
    }
    rows = []
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        figures = {key: value.value for key, value in materialization.metadata.items()}
        rows.append(
            {
                "entity": materialization.asset_key.to_user_string(),
                **figures,
                "check": "passed" if checks.get(materialization.asset_key) else "FAILED",
            }
        )
    return pd.DataFrame(rows).set_index("entity")


def run_demo(workdir: Path, port: int = DEFAULT_PORT) -> int:
    """Seed (first time), serve, run the whole job on a persistent instance, print the summary."""
    paths = DemoPaths(workdir)
    if prepare(paths, port):
        print(f"seeded {sum(DEMO_ROWS.values())} rows into {paths.workdir}: {DEMO_ROWS}")
    os.environ.update(environment(paths))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    defs = build_definitions(load_settings(paths.settings_file))
    with (
        running_receiver(port),
        running_zuora(paths.zuora, port),
        running_praxedo(paths.field_service, port) as praxedo,
        dg.DagsterInstance.get() as instance,
    ):
        finished = technicians_day(praxedo)
        result = defs.resolve_job_def(TAMHR_SYNC.job_name).execute_in_process(
            run_config=QUIET_RUN, instance=instance, raise_on_error=False
        )
        customers, customers_as_expected = run_zuora_pull(paths.zuora, instance)
        field_service, field_service_ok = run_field_service(paths.field_service, instance)
    table = summary(result)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(
            table[
                [
                    "rows_found",
                    "already_tracked",
                    "sent",
                    "failed",
                    "batches_ok",
                    "batches_failed",
                    "duration_seconds",
                    "check",
                ]
            ].to_string()
        )
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data is not None:
            print(f"FAILED {event.step_key}: {event.step_failure_data.user_failure_data.description}")
    print(f"run {result.run_id}: sent {int(table['sent'].sum())} records in total")
    print("\nZuora workflows pull, one run per customer (umbrella's credentials are refused on purpose):")
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_colwidth", 90):
        print(customers.to_string())
    written = int(customers[["inserted", "updated"]].fillna(0).to_numpy().sum())
    rows = "row" if written == 1 else "rows"
    print(
        f"wrote {written} workflow {rows} in total (Dagster UI: `make ui`, DAGSTER_HOME={os.environ['DAGSTER_HOME']})"
    )
    print("\nCHR -> Praxedo field-service syncs (CON-LATE-1's account is not in CHR yet: held back, no call):")
    if finished:
        print(f"in Praxedo since the last run: {', '.join(finished[:-1])} completed, {finished[-1]} cancelled")
    with pd.option_context("display.width", 220, "display.max_columns", 20):
        print(field_service.to_string())
    pushed = field_service[field_service["created"].notna()]  # the per-record sinks; the status sync writes CHR
    sent = int(pushed[["created", "updated"]].fillna(0).to_numpy().sum())
    print(f"sent {sent} {'record' if sent == 1 else 'records'} to Praxedo in total")
    moved = int(field_service.loc["completed_work_orders", "updated"] or 0)
    print(f"moved {moved} CHR work order {'status' if moved == 1 else 'statuses'} forward from Praxedo")
    tamhr_ok = result.success and (table["check"] == "passed").all()
    return 0 if tamhr_ok and customers_as_expected and field_service_ok else 1


def tracking_count(paths: DemoPaths) -> int:
    """Rows in the demo's tracking table (for tests and curious users)."""
    engine = create_sync_engine(paths.database_url("log_db"))
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(tracking_table)).scalar_one()
    engine.dispose()
    return int(count)
