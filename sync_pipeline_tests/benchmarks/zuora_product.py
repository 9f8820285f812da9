"""The product's per-customer Zuora pull as the benchmark runs it: one process, one customer's partition.

It builds the definitions from the YAML declaration (`PULL_YAML`, the one the real-database test
declares, with the page size a parameter) through `dg.build_defs_for_component`, adds the customer's
partition as the customers sensor would, and executes `zuora_sync_job` for it on the instance of
$DAGSTER_HOME. The customers table, the Fernet key and the database URLs come from the environment
as in a deployment. It writes what the run recorded (success, the materialization's metadata) to
`--result-file`, and exits 1 if the run failed.

    DAGSTER_HOME=... APP_DB_URL=... SYNC_LOG_DB_URL=... ZUORA_SECRET_KEY=... \\
        python -m sync_pipeline_tests.benchmarks.zuora_product --simulator 127.0.0.1:PORT --customer bench \\
        --page-size 500 --result-file out.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from sync_pipeline.orchestration.component import SyncComponent
from sync_pipeline_tests.benchmarks.process_cpu import cpu_seconds
from sync_pipeline_tests.real_db.customer_pull import DEFS_YAML

JOB = "zuora_sync_job"
PARTITIONS = "zuora_customers"
APP_DB_ENV_VAR = "APP_DB_URL"
LOG_DB_ENV_VAR = "SYNC_LOG_DB_URL"
SECRET_KEY_ENV_VAR = "ZUORA_SECRET_KEY"
TARGET_TABLE = "app_zuora_workflows"

DECLARED_PAGE_SIZE = "page_size: 50,"
PULL_YAML = DEFS_YAML.replace(DECLARED_PAGE_SIZE, "page_size: {page_size},")
"""The real-database test's declaration (real_db/customer_pull.py) with its page size a parameter."""


def pull_attributes(simulator: str, page_size: int) -> dict[str, Any]:
    """The component's attributes for a pull from `simulator` (`host:port`), `page_size` workflows a page."""
    document = PULL_YAML.replace("{simulator}", simulator).replace("{page_size}", str(page_size))
    attributes: dict[str, Any] = yaml.safe_load(document)["attributes"]
    return attributes


def run_customer(simulator: str, page_size: int, customer: str) -> dict[str, Any]:
    """Execute the pull job for `customer` on $DAGSTER_HOME's instance: success and the materialization's metadata."""
    defs = dg.build_defs_for_component(SyncComponent.resolve_from_dict(pull_attributes(simulator, page_size)))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(PARTITIONS, [customer])
        result = defs.resolve_job_def(JOB).execute_in_process(
            instance=instance, partition_key=customer, raise_on_error=False
        )
    metadata: dict[str, Any] = {}
    for event in result.get_asset_materialization_events():
        for key, value in event.materialization.metadata.items():
            found = getattr(value, "value", value)
            if isinstance(found, int | float | str):
                metadata[key] = found
    return {"success": result.success, "run_id": result.run_id, "metadata": metadata}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one customer's pull, write the outcome to `--result-file`; 1 if the run failed."""
    parser = argparse.ArgumentParser(description="The product's Zuora pull of one customer, as the benchmark runs it.")
    parser.add_argument("--simulator", required=True, help="host:port of the Zuora on 127.0.0.1")
    parser.add_argument("--customer", required=True, help="the customer id, a row of the customers table")
    parser.add_argument("--page-size", type=int, required=True, help="page_length asked of Zuora")
    parser.add_argument("--result-file", type=Path, required=True)
    args = parser.parse_args(argv)
    outcome = run_customer(args.simulator, args.page_size, args.customer)
    outcome["cpu_seconds"] = cpu_seconds()
    args.result_file.write_text(json.dumps(outcome), encoding="utf-8")
    return 0 if outcome["success"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
