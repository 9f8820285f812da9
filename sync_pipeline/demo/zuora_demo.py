"""The Zuora pull in the demo: a local Zuora kept from one run to the next, four customers, a run for each.

The first time, the demo creates the application's database (`zuora_app.db`: customers and workflows),
a Fernet key for the customers' secrets (`zuora_secret.key`, the demo's stand-in for ZUORA_SECRET_KEY),
three customers with their own Zuora tenant and workflows (`zuora/<customer>.json`, the local Zuora's
data: edit a workflow there, with a later `updatedAt`, and the next run updates exactly that row), and a
fourth, `umbrella`, whose credentials Zuora never issued, so its run is refused as a wrong secret would
be. Each run starts the local Zuora on 127.0.0.1 (the receiver's port + 1) with those tenants, adds a
partition per active customer through the customers sensor, and runs the packaged job once per customer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa
import yaml
from cryptography.fernet import Fernet

from sync_pipeline.connectors.zuora.customers import SecretBox, customers_table
from sync_pipeline.demo.zuora import ZuoraSimulator, ZuoraTenant, new_credentials
from sync_pipeline.demo.zuora_seed import create_application_tables, customer_row, zuora_definitions, zuora_settings
from sync_pipeline.resources.database import create_sync_engine

DEMO_TENANTS = {"acme": 120, "globex": 45, "initech": 8}
"""The demo's customers with a Zuora tenant, and how many workflows each starts with."""
REFUSED_CUSTOMER = "umbrella"
"""A customer whose credentials the local Zuora never issued: its run is refused, and says so."""
SUMMARY_COLUMNS = {
    "rows_found": "workflows",
    "inserted": "inserted",
    "updated": "updated",
    "unchanged": "unchanged",
    "deleted": "deleted",
    "exports_ok": "exports_ok",
    "exports_failed": "exports_failed",
    "conflicts": "conflicts",
    "api_calls": "api_calls",
    "token_requests": "tokens",
    "duration_seconds": "seconds",
}
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
"""The summary says how each customer's run went; the event log keeps every event for the UI."""


def zuora_port(port: int) -> int:
    """The local Zuora's port: the receiver's plus one."""
    return port + 1


class ZuoraDemoFiles:
    """Where the demo keeps the Zuora pull's files, under the demo's workdir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.app_db_url = f"sqlite:///{(workdir / 'zuora_app.db').resolve()}"
        self.secret_key_file = workdir / "zuora_secret.key"
        self.settings_file = workdir / "zuora_settings.yaml"
        self.tenants_dir = workdir / "zuora"

    def secret_key(self) -> str:
        """The demo's Fernet key for the customers' secrets (made the first time)."""
        if not self.secret_key_file.exists():
            self.secret_key_file.write_text(Fernet.generate_key().decode(), encoding="utf-8")
        return self.secret_key_file.read_text(encoding="utf-8").strip()

    def environment(self) -> dict[str, str]:
        """The variables the packaged Zuora pull reads, pointed at the demo's files."""
        return {
            "ZUORA_APP_DB_URL": self.app_db_url,
            "ZUORA_SECRET_KEY": self.secret_key(),
            "SYNC_PIPELINE_ZUORA_SETTINGS": str(self.settings_file.resolve()),
        }


def prepare_zuora(files: ZuoraDemoFiles, port: int, ui_port: int) -> bool:
    """Write the demo's Zuora settings (the local Zuora allowed, alert links to the UI's port) and, the first
    time, create the customers and their tenants' workflows; point every demo customer at the local Zuora.
    True if it created them."""
    files.workdir.mkdir(parents=True, exist_ok=True)
    settings = zuora_settings(
        f"127.0.0.1:{zuora_port(port)}", {"alerts": {"ui_base_url": f"http://127.0.0.1:{ui_port}"}}
    )
    files.settings_file.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    box = SecretBox(files.secret_key(), "ZUORA_SECRET_KEY")
    base_url = f"http://127.0.0.1:{zuora_port(port)}"
    app = create_sync_engine(files.app_db_url)
    try:
        create_application_tables(app)
        with app.begin() as conn:
            created = conn.execute(sa.select(sa.func.count()).select_from(customers_table)).scalar_one() == 0
            if created:
                files.tenants_dir.mkdir(exist_ok=True)
                rows = [
                    customer_row(box, name, _new_tenant(files, name, count), base_url)
                    for name, count in DEMO_TENANTS.items()
                ]
                rows.append(customer_row(box, REFUSED_CUSTOMER, new_credentials(REFUSED_CUSTOMER), base_url))
                conn.execute(sa.insert(customers_table), rows)
            conn.execute(sa.update(customers_table).values(BaseUrl=base_url))  # the local Zuora's port may move
    finally:
        app.dispose()
    return created


def _new_tenant(files: ZuoraDemoFiles, name: str, workflows: int) -> ZuoraTenant:
    """A tenant's credentials and first workflows, made by a local Zuora and kept in the demo's files."""
    with ZuoraSimulator() as zuora:
        tenant = zuora.add_tenant(name, workflows=workflows)
        (files.tenants_dir / f"{name}.json").write_text(json.dumps(zuora.workflows(tenant), indent=2), encoding="utf-8")
    return tenant


@contextmanager
def running_zuora(files: ZuoraDemoFiles, port: int) -> Iterator[ZuoraSimulator]:
    """The local Zuora on 127.0.0.1, serving each demo customer's tenant with the workflows kept for it."""
    box = SecretBox(files.secret_key(), "ZUORA_SECRET_KEY")
    app = create_sync_engine(files.app_db_url)
    with app.connect() as conn:
        customers = conn.execute(sa.select(customers_table)).mappings().all()
    app.dispose()
    try:
        zuora = ZuoraSimulator(port=zuora_port(port))
    except OSError as exc:
        raise SystemExit(
            f"cannot start the local Zuora on 127.0.0.1:{zuora_port(port)} ({exc.strerror}); use --port"
        ) from None
    with zuora:
        for customer in customers:
            kept = files.tenants_dir / f"{customer['CustomerId']}.json"
            if not kept.exists():  # a customer Zuora does not know (umbrella)
                continue
            secret = box.decrypt(customer["ClientSecretEncrypted"])
            credentials = ZuoraTenant(customer["CustomerId"], customer["ClientId"], secret)
            tenant = zuora.add_tenant(credentials.name, credentials=credentials)
            zuora.load_workflows(tenant, json.loads(kept.read_text(encoding="utf-8")))
        yield zuora


def run_zuora_pull(files: ZuoraDemoFiles, instance: dg.DagsterInstance) -> tuple[pd.DataFrame, bool]:
    """Every active customer's run, as the nightly schedule would start them; the per-customer figures, and
    whether each went as the demo expects (all through, but the refused customer)."""
    settings = yaml.safe_load(files.settings_file.read_text(encoding="utf-8"))
    defs = zuora_definitions(settings)
    sensor = defs.resolve_sensor_def("zuora_customers")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        for request in sensor.evaluate_tick(context).dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    job = defs.resolve_job_def("zuora_sync_job")
    rows: list[dict[str, Any]] = []
    as_expected = True
    for customer in instance.get_dynamic_partitions("zuora_customers"):
        result = job.execute_in_process(
            instance=instance, partition_key=customer, run_config=QUIET_RUN, raise_on_error=False
        )
        as_expected &= result.success == (customer != REFUSED_CUSTOMER)
        rows.append({"customer": customer, **_figures(result)})
    table = pd.DataFrame(rows).set_index("customer")
    counted = [label for label in SUMMARY_COLUMNS.values() if label != "seconds" and label in table]
    return table.astype(dict.fromkeys(counted, "Int64")), as_expected


def _figures(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """A customer run's figures from its materialization, and its outcome in a few words."""
    events = result.get_asset_materialization_events()
    if not events:
        return {"outcome": "no materialization"}
    metadata = {key: getattr(value, "value", value) for key, value in events[-1].materialization.metadata.items()}
    figures = {label: metadata.get(name) for name, label in SUMMARY_COLUMNS.items()}
    outcome = str(metadata.get("outcome", ""))
    figures["outcome"] = "complete" if result.success else _short(outcome)
    return figures


def _short(outcome: str, limit: int = 90) -> str:
    return outcome if len(outcome) <= limit else outcome[: limit - 1] + "…"
