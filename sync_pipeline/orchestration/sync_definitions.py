"""Everything Dagster needs for one sync: its assets and checks, its jobs, schedules, alert sensor and resources."""

from __future__ import annotations

import dagster as dg

from sync_pipeline.orchestration.alerts import build_alert_sensor
from sync_pipeline.orchestration.customers import customer_partitions
from sync_pipeline.orchestration.dry_run_job import build_dry_run_job
from sync_pipeline.orchestration.resources import build_resources
from sync_pipeline.orchestration.retention_job import build_retention_definitions
from sync_pipeline.orchestration.schedules import build_job_and_schedule
from sync_pipeline.orchestration.sync_assets import build_entity_assets
from sync_pipeline.settings import Settings
from sync_pipeline.specs.sync import SyncSpec


def build_sync_definitions(sync: SyncSpec, settings: Settings) -> dg.Definitions:
    """The sync's definitions, every name derived from the sync's so that syncs never collide.

    The alert webhook, the executor and the loggers are the code location's, shared by every sync
    (see `definitions.py`).
    """
    partitions = customer_partitions(sync).name if settings.customers is not None else None
    return dg.Definitions.merge(
        build_job_and_schedule(sync, settings),
        build_retention_definitions(sync, settings),
        dg.Definitions(
            assets=build_entity_assets(sync, settings),
            jobs=[build_dry_run_job(sync, settings)],
            sensors=[build_alert_sensor(settings.alerts, sync, partitions)],
            resources=build_resources(sync, settings),
        ),
    )
