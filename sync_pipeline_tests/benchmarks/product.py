"""The product under test as users run it: `dg launch --assets users`, its settings file, what it recorded.

The benchmark (`run`) starts `dg launch` in its own process, with SYNC_PIPELINE_SETTINGS at the file
`write_settings_file` wrote (the packaged `default_settings.yaml` with `api.base_url` at the benchmark
receiver), the database URLs and the API key in the usual environment variables, and a DAGSTER_HOME
of its own; then it reads the run back from that instance with `recorded_outcome`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from sync_pipeline.orchestration.sync_assets import CHECK_NAME
from sync_pipeline.settings import DEFAULT_SETTINGS_PATH, parse_settings

ASSET = "users"


def benchmark_settings_document(
    base_url: str, max_in_flight: int | None = None, batch_size: int | None = None
) -> dict[str, Any]:
    """The packaged default settings file's content, sending to `base_url` (with `api.max_in_flight` and
    `batch_size`, when given)."""
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_SETTINGS_PATH.read_text(encoding="utf-8"))
    raw["api"]["base_url"] = base_url
    if max_in_flight is not None:
        raw["api"]["max_in_flight"] = max_in_flight
    if batch_size is not None:
        raw["batch_size"] = batch_size
    return raw


def write_settings_file(
    path: Path, base_url: str, max_in_flight: int | None = None, batch_size: int | None = None
) -> Path:
    """Write `benchmark_settings_document` to `path` as YAML, once it parses as the code location parses it."""
    document = benchmark_settings_document(base_url, max_in_flight, batch_size)
    parse_settings(document, source=str(path))
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def recorded_outcome(dagster_home: Path, created_after: dt.datetime) -> dict[str, Any]:
    """The latest run created in `dagster_home` after `created_after` (empty if none), as the instance
    recorded it: success (run and check), the engine's `duration_seconds` as `seconds`, the run's own
    start-to-end `run_seconds`, and `users`' counts."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(created_after=created_after), limit=1)
        if not records:
            return {}
        record = records[0]
        run_id = record.dagster_run.run_id
        materializations = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        evaluations = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    metadata: dict[str, Any] = {}
    for entry in materializations:
        materialization = entry.asset_materialization
        if materialization is not None and materialization.asset_key == dg.AssetKey(ASSET):
            metadata = {key: value.value for key, value in materialization.metadata.items()}
    checks = [
        evaluation.passed
        for evaluation in (entry.asset_check_evaluation for entry in evaluations)
        if evaluation is not None and evaluation.check_name == CHECK_NAME
    ]
    run_seconds = (record.end_time or 0.0) - (record.start_time or 0.0)
    return {
        **{key: value for key, value in metadata.items() if isinstance(value, int | float)},
        "impl": "product",
        "success": bool(record.dagster_run.status == dg.DagsterRunStatus.SUCCESS and checks and all(checks)),
        "seconds": float(metadata.get("duration_seconds", 0.0)),
        "run_seconds": run_seconds if record.start_time and record.end_time else None,
    }
