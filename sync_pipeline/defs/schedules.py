"""The job over the sync group and the nightly schedule that runs it."""

import dagster as dg

from sync_pipeline.defs.sync_assets import GROUP
from sync_pipeline.entities import TAMHR_ENTITIES
from sync_pipeline.settings import ScheduleSettings

JOB_NAME = "tamhr_sync_job"
SCHEDULE_NAME = "tamhr_sync_nightly"


class JobRunConfig(dg.Config):
    """The whole job's run config: `{dry_run: true}` previews every entity; the schedule sends."""

    dry_run: bool = False


@dg.config_mapping
def job_config(config: JobRunConfig) -> dict[str, object]:
    """Spread the job's one switch over every entity asset's own config."""
    return {"ops": {spec.asset_name: {"config": {"dry_run": config.dry_run}} for spec in TAMHR_ENTITIES}}


sync_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.groups(GROUP),
    config=job_config,
    description="Users → ActualOrg → ActualEntity → OrgObject → EventsCalendar.",
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
