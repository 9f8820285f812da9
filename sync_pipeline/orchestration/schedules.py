"""A sync's job over its group and the schedule that runs it."""

import dagster as dg

from sync_pipeline.orchestration.customers import build_customers_schedule, build_customers_sensor
from sync_pipeline.settings import Settings
from sync_pipeline.specs.sync import SyncSpec

MAX_RUNTIME_TAG = "dagster/max_runtime"
"""Seconds after which Dagster's run monitoring ends a run (dagster.yaml: `run_monitoring: enabled`)."""


def build_job_and_schedule(sync: SyncSpec, settings: Settings) -> dg.Definitions:
    """The job running every entity of the sync in order, and its schedule (cron and time zone from settings);
    a sync run per customer gets one run per customer at that time, and the sensor keeping its partitions."""
    order = " → ".join(entity.name for entity in sync.entities)
    per_customer = settings.customers is not None
    job = dg.define_asset_job(
        sync.job_name,
        selection=dg.AssetSelection.groups(sync.group),
        description=f"{order}; fails when any entity did not deliver everything, after all of them ran.",
        # A customer's run that outlives the alert's limit is ended by Dagster's run monitoring.
        tags={MAX_RUNTIME_TAG: str(settings.alerts.max_run_minutes * 60)} if per_customer else None,
    )
    if per_customer:
        return dg.Definitions(
            jobs=[job],
            schedules=[build_customers_schedule(sync, settings)],
            sensors=[build_customers_sensor(sync, settings)],
        )
    schedule = settings.schedule
    nightly = dg.ScheduleDefinition(
        name=sync.schedule_name,
        job=job,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if schedule.enabled else dg.DefaultScheduleStatus.STOPPED,
    )
    return dg.Definitions(jobs=[job], schedules=[nightly])
