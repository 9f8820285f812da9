"""The product under test: a real Dagster materialization of `users`, in this process, timed.

The settings are the packaged `default_settings.yaml` with `api.base_url` pointed at the benchmark
receiver, parsed by `parse_settings`; the definitions, assets and resources (`SyncDatabase` x3,
`HttpSyncApiClient`) are exactly what `build_definitions` gives the code location, with the
database URLs and the API key read from the usual environment variables at run start. Only
`users` is selected, on an ephemeral instance.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from sync_pipeline.definitions import build_definitions
from sync_pipeline.defs.sync_assets import CHECK_NAME
from sync_pipeline.settings import DEFAULT_SETTINGS_PATH, Settings, parse_settings
from sync_pipeline_tests.benchmarks.process_memory import peak_rss_mb

ASSET = "users"


def benchmark_settings(base_url: str, max_in_flight: int | None = None, batch_size: int | None = None) -> Settings:
    """The packaged default settings, sending to `base_url` (with `api.max_in_flight` and `batch_size`, when given)."""
    raw = yaml.safe_load(DEFAULT_SETTINGS_PATH.read_text(encoding="utf-8"))
    raw["api"]["base_url"] = base_url
    if max_in_flight is not None:
        raw["api"]["max_in_flight"] = max_in_flight
    if batch_size is not None:
        raw["batch_size"] = batch_size
    return parse_settings(raw, source="benchmark settings")


def materialize_users(base_url: str, max_in_flight: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Materialize `users` once; the seconds, the run's success, the check and the asset's metadata."""
    defs = build_definitions(benchmark_settings(base_url, max_in_flight, batch_size))
    assets = [asset for asset in defs.assets or [] if isinstance(asset, dg.AssetsDefinition)]
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = dg.materialize(
            assets, resources=defs.resources, selection=[ASSET], instance=instance, raise_on_error=False
        )
        seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {}
    for event in result.get_asset_materialization_events():
        metadata = {key: value.value for key, value in event.materialization.metadata.items()}
    checks = [ev.passed for ev in result.get_asset_check_evaluations() if ev.check_name == CHECK_NAME]
    return {
        "impl": "product",
        "success": bool(result.success and checks and all(checks)),
        "seconds": seconds,
        **{key: value for key, value in metadata.items() if isinstance(value, int | float)},
    }


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m sync_pipeline_tests.benchmarks.product --base-url … [--max-in-flight N] [--batch-size N]`."""
    parser = argparse.ArgumentParser(description="Materialize the product's `users` asset once, timed.")
    parser.add_argument("--base-url", required=True, help="the receiver's /api/sync/ URL")
    parser.add_argument("--max-in-flight", type=int, help="set api.max_in_flight (default: the packaged setting)")
    parser.add_argument("--batch-size", type=int, help="set batch_size (default: the packaged setting)")
    parser.add_argument("--result-file", type=Path, help="write the outcome here as JSON")
    args = parser.parse_args(argv)
    outcome = materialize_users(args.base_url, args.max_in_flight, args.batch_size)
    result = {**outcome, "peak_rss_mb": peak_rss_mb()}
    if args.result_file:
        args.result_file.write_text(json.dumps(result), encoding="utf-8")
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
