"""A sync's job over its group and the schedule that runs it."""

import dagster as dg

from sync_pipeline.settings import ScheduleSettings
from sync_pipeline.specs.sync import SyncSpec


def build_job_and_schedule(sync: SyncSpec, schedule: ScheduleSettings) -> dg.Definitions:
    """The job running every entity of the sync in order, and its schedule (cron and time zone from settings)."""
    order = " → ".join(entity.name for entity in sync.entities)
    job = dg.define_asset_job(
        sync.job_name,
        selection=dg.AssetSelection.groups(sync.group),
        description=f"{order}; fails when any entity did not deliver everything, after all of them ran.",
    )
    nightly = dg.ScheduleDefinition(
        name=sync.schedule_name,
        job=job,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if schedule.enabled else dg.DefaultScheduleStatus.STOPPED,
    )
    return dg.Definitions(jobs=[job], schedules=[nightly])
