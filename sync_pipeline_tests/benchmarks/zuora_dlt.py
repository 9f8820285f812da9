"""The dlt anchor: one customer's Zuora workflows pulled by a dlt `rest_api` pipeline into PostgreSQL.

Runs in its own virtualenv (`make bench-pull` builds `.venv-dlt` from requirements-dlt.txt), so it
imports only dlt and the standard library. The source is configured as a dlt user would for Zuora:
OAuth2 client credentials against the same token endpoint, the JSON link paginator on
`pagination.next_page`, records under `data`, `page_length` sent; each workflow mapped to the
product's columns (customer_id, zuora_id, name, status, updated_at) and merged with dlt's `upsert`
strategy on (customer_id, zuora_id), its only merge that updates rows in place. The client id and
secret come from the environment (dlt reads secrets from there, not from a customers table). It
writes its figures to `--result-file`.

    ZUORA_CLIENT_ID=... ZUORA_CLIENT_SECRET=... .venv-dlt/bin/python -m sync_pipeline_tests.benchmarks.zuora_dlt \\
        --base-url http://127.0.0.1:PORT --dsn postgresql://... --dataset dlt_zuora --customer bench \\
        --page-size 500 --pipelines-dir DIR --result-file out.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sync_pipeline_tests.benchmarks.process_cpu import cpu_seconds

CLIENT_ID_ENV_VAR = "ZUORA_CLIENT_ID"
CLIENT_SECRET_ENV_VAR = "ZUORA_CLIENT_SECRET"
TABLE = "workflows"


def workflows_source(base_url: str, customer: str, page_size: int) -> Any:
    """The rest_api source of one customer's workflows, mapped to the product's columns."""
    # dlt is imported where it is used: the benchmark runner, in a virtualenv without dlt, imports this
    # module for its names.
    from dlt.sources.helpers.rest_client.auth import OAuth2ClientCredentials
    from dlt.sources.rest_api import rest_api_source

    def as_row(workflow: dict[str, Any]) -> dict[str, Any]:
        return {
            "customer_id": customer,
            "zuora_id": workflow["id"],
            "name": workflow["name"],
            "status": workflow["status"],
            "updated_at": workflow["updatedAt"],
        }

    auth = OAuth2ClientCredentials(
        access_token_url=f"{base_url}/oauth/token",
        client_id=os.environ[CLIENT_ID_ENV_VAR],
        client_secret=os.environ[CLIENT_SECRET_ENV_VAR],
    )
    return rest_api_source(
        {
            "client": {
                "base_url": f"{base_url}/v1/",
                "auth": auth,
                "paginator": {"type": "json_link", "next_url_path": "pagination.next_page"},
            },
            "resources": [
                {
                    "name": TABLE,
                    "endpoint": {"path": "workflows", "params": {"page_length": page_size}, "data_selector": "data"},
                    "primary_key": ["customer_id", "zuora_id"],
                    "write_disposition": {"disposition": "merge", "strategy": "upsert"},
                    "processing_steps": [{"map": as_row}],
                    "columns": {
                        "customer_id": {"data_type": "text", "nullable": False},
                        "zuora_id": {"data_type": "bigint", "nullable": False},
                        "name": {"data_type": "text"},
                        "status": {"data_type": "text"},
                        "updated_at": {"data_type": "timestamp"},
                    },
                }
            ],
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline once, write its figures to `--result-file`."""
    parser = argparse.ArgumentParser(description="A dlt rest_api pull of Zuora workflows into PostgreSQL.")
    parser.add_argument("--base-url", required=True, help="http://127.0.0.1:PORT of the Zuora")
    parser.add_argument("--dsn", required=True, help="libpq URL of the application's database")
    parser.add_argument("--dataset", required=True, help="the schema dlt loads into")
    parser.add_argument("--customer", required=True)
    parser.add_argument("--page-size", type=int, required=True)
    parser.add_argument("--pipelines-dir", required=True, help="dlt's working folder (state, load packages)")
    parser.add_argument("--result-file", type=Path, required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name="zuora_workflows",
        pipelines_dir=args.pipelines_dir,
        destination=dlt.destinations.postgres(credentials=args.dsn),
        dataset_name=args.dataset,
    )
    info = pipeline.run(workflows_source(args.base_url, args.customer, args.page_size))
    normalized = pipeline.last_trace.last_normalize_info
    rows = normalized.row_counts.get(TABLE, 0) if normalized is not None else 0
    outcome = {
        "success": not info.has_failed_jobs,
        "records": rows,
        "seconds": time.perf_counter() - started,
        "dlt_version": dlt.__version__,
    }
    outcome["cpu_seconds"] = cpu_seconds()
    args.result_file.write_text(json.dumps(outcome), encoding="utf-8")
    return 0 if outcome["success"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
