"""The job over the sync group and the nightly schedule that runs it."""

import dagster as dg

from sync_pipeline.orchestration.sync_assets import GROUP
from sync_pipeline.settings import ScheduleSettings

JOB_NAME = "tamhr_sync_job"
SCHEDULE_NAME = "tamhr_sync_nightly"

sync_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.groups(GROUP),
    description="Users → ActualOrg → ActualEntity → OrgObject → EventsCalendar; fails when any entity "
    "did not deliver everything, after all of them ran.",
)


def build_schedule(schedule: ScheduleSettings) -> dg.ScheduleDefinition:
    """The nightly schedule; cron and time zone come from the settings file."""
    return dg.ScheduleDefinition(
        name=SCHEDULE_NAME,
        job=sync_job,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if schedule.enabled else dg.DefaultScheduleStatus.STOPPED,
    )
