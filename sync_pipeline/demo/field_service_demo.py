"""The CHR -> Praxedo field-service syncs in the demo: CHR's database and a local Praxedo kept from one run
to the next, and one run of the family's job.

The first time, the demo makes CHR's database (`chr.db`: 40 accounts, 81 contacts, 120 work orders; one
contact belongs to an account CHR does not have yet, so it is held back on every run and says why).
Praxedo's records are kept in `praxedo.json` between runs, as the real Praxedo keeps them. Edit an
account in `chr.db` (README, "The CHR and Praxedo field-service syncs") and the next run sends exactly
that one update. Before every run after the first, Praxedo's technicians finish three work orders (one
of them without a completion date: cancelled), whose statuses the run brings back to CHR. The local
Praxedo listens on 127.0.0.1, the receiver's port + 2.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import yaml

from sync_pipeline.connectors.praxedo.operations import MANAGERS
from sync_pipeline.demo.field_service_seed import (
    PRAXEDO_USER,
    SYNC,
    ChrData,
    field_service_definitions,
    field_service_settings,
    seed_chr,
)
from sync_pipeline.demo.praxedo import PraxedoSimulator
from sync_pipeline.orchestration.component import declared_spec, settings_env_var
from sync_pipeline.resources.database import create_sync_engine

DEMO_DATA = ChrData(accounts=40, contacts=2, work_orders=3, dangling_contacts=1)
DEMO_PASSWORD = "demo-only-praxedo-password"  # the local Praxedo's; a real one comes from PRAXEDO_PASSWORD
SUMMARY_COLUMNS = {
    "rows_found": "records",
    "created": "created",
    "updated": "updated",
    "adopted": "adopted",
    "unchanged": "unchanged",
    "held_back": "held_back",
    "rejected": "rejected",
    "failed": "failed",
    "api_calls": "api_calls",
    "duration_seconds": "seconds",
}
COMPLETED_PER_RUN = 3
"""Work orders Praxedo's technicians finish between two demo runs."""
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def praxedo_port(port: int) -> int:
    """The local Praxedo's port: the receiver's plus two (Zuora has plus one)."""
    return port + 2


class FieldServiceDemoFiles:
    """Where the demo keeps the field-service syncs' files, under the demo's workdir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.chr_db = workdir / "chr.db"
        self.praxedo_file = workdir / "praxedo.json"
        self.settings_file = workdir / "field_service_settings.yaml"

    @property
    def chr_db_url(self) -> str:
        """CHR's database, SQLite in the demo."""
        return f"sqlite:///{self.chr_db.resolve()}"

    def environment(self) -> dict[str, str]:
        """The variables the packaged field-service syncs read, pointed at the demo's files."""
        return {
            "CHR_DB_URL": self.chr_db_url,
            "PRAXEDO_PASSWORD": DEMO_PASSWORD,
            settings_env_var(SYNC): str(self.settings_file.resolve()),
        }


def _settings(port: int, ui_port: int) -> dict[str, Any]:
    base_url = f"http://127.0.0.1:{praxedo_port(port)}/eTech/services/cxf/v6/"
    return field_service_settings(base_url, {"alerts": {"ui_base_url": f"http://127.0.0.1:{ui_port}"}})


def prepare_field_service(files: FieldServiceDemoFiles, port: int, ui_port: int) -> bool:
    """Write the demo's field-service settings (the local Praxedo, alert links to the UI) and, the first
    time, make CHR's database; True if it made it."""
    files.workdir.mkdir(parents=True, exist_ok=True)
    settings = _settings(port, ui_port)
    files.settings_file.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    if files.chr_db.exists():
        return False
    engine = create_sync_engine(files.chr_db_url)
    try:
        seed_chr(engine, declared_spec(SYNC), settings, DEMO_DATA)
    finally:
        engine.dispose()
    return True


@contextmanager
def running_praxedo(files: FieldServiceDemoFiles, port: int) -> Iterator[PraxedoSimulator]:
    """The local Praxedo on 127.0.0.1 holding what it held at the end of the last demo run; kept again after."""
    try:
        praxedo = PraxedoSimulator(PRAXEDO_USER, DEMO_PASSWORD, port=praxedo_port(port))
    except OSError as exc:
        raise SystemExit(
            f"cannot start the local Praxedo on 127.0.0.1:{praxedo_port(port)} ({exc.strerror}); use --port"
        ) from None
    kept: dict[str, list[dict[str, Any]]] = (
        json.loads(files.praxedo_file.read_text(encoding="utf-8")) if files.praxedo_file.exists() else {}
    )
    with praxedo:
        for manager, records in kept.items():
            for record in records:
                praxedo.put(manager, record)
        try:
            yield praxedo
        finally:
            held = {manager: list(praxedo.held(manager).values()) for manager in MANAGERS}
            files.praxedo_file.write_text(json.dumps(held, indent=1), encoding="utf-8")


def technicians_day(praxedo: PraxedoSimulator) -> list[str]:
    """Between two demo runs Praxedo's technicians finish the next work orders it holds as NEW: two completed
    today, a third closed without a completion date (a cancellation), so the sync back has work to do."""
    new = sorted(
        event_id for event_id, event in praxedo.held("BusinessEventManager").items() if event.get("status") == "NEW"
    )
    chosen = new[:COMPLETED_PER_RUN]
    praxedo.complete(chosen[:-1], "COMPLETED", dt.datetime.now(dt.UTC))
    praxedo.complete(chosen[-1:], "COMPLETED", None)
    return chosen


def run_field_service(files: FieldServiceDemoFiles, instance: dg.DagsterInstance) -> tuple[pd.DataFrame, bool]:
    """One run of the family's job, as its schedule starts it; the figures per entity and whether it succeeded."""
    settings = yaml.safe_load(files.settings_file.read_text(encoding="utf-8"))
    job = field_service_definitions(settings).resolve_job_def(f"{SYNC}_sync_job")
    result = job.execute_in_process(instance=instance, run_config=QUIET_RUN, raise_on_error=False)
    rows = []
    for event in result.get_asset_materialization_events():
        metadata = {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}
        entity = event.materialization.asset_key.to_user_string().removeprefix(f"{SYNC}_")
        rows.append({"entity": entity, **{label: metadata.get(name) for name, label in SUMMARY_COLUMNS.items()}})
    table = pd.DataFrame(rows).set_index("entity")
    counted = [label for label in SUMMARY_COLUMNS.values() if label != "seconds"]
    return table.astype(dict.fromkeys(counted, "Int64")), result.success
