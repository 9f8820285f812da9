"""A sync's retention job: its logs older than `retention.days` purged on the retention schedule.

Built for a sync run per customer (whose credential-use and SchedulerLog rows grow with every customer's
run) and for any other sync whose settings set `retention:`; the rows purged per table are the metadata
of the job's one op.

No `from __future__ import annotations` here: Dagster reads the op's annotations at runtime.
"""

import datetime as dt

import dagster as dg

from sync_pipeline.engine.state.retention import LOG_RETENTION, PurgeFailed, purge_older_than
from sync_pipeline.engine.state.tracking import utc_now
from sync_pipeline.resources.database import DatabaseUrlError, SyncDatabase
from sync_pipeline.settings import RetentionSettings, Settings
from sync_pipeline.specs.sync import SyncSpec


def build_retention_definitions(sync: SyncSpec, settings: Settings) -> dg.Definitions:
    """The job `<sync>_retention` and its schedule, or nothing when the sync keeps its logs (no retention)."""
    retention = settings.retention_in_force
    if retention is None:
        return dg.Definitions()
    job = _purge_job(sync, retention)
    schedule = dg.ScheduleDefinition(
        name=f"{sync.name}_retention_schedule",
        job=job,
        cron_schedule=retention.cron,
        execution_timezone=retention.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if retention.enabled else dg.DefaultScheduleStatus.STOPPED,
    )
    return dg.Definitions(jobs=[job], schedules=[schedule])


def _purge_job(sync: SyncSpec, retention: RetentionSettings) -> dg.JobDefinition:
    log_key = sync.resource_key("log_db")
    tables = ", ".join(target.table.name for target in LOG_RETENTION)
    entity_types = [sync.entity_type(spec) for spec in sync.entities]

    @dg.op(
        name=f"{sync.name}_purge_logs",
        required_resource_keys={log_key},
        description=f"Deletes {sync.name}'s rows older than {retention.days} days from {tables}.",
    )
    def purge_logs(context: dg.OpExecutionContext) -> dg.Output[None]:
        log_db: SyncDatabase = getattr(context.resources, log_key)
        before = utc_now() - dt.timedelta(days=retention.days)
        try:
            deleted = purge_older_than(log_db.get_engine(), LOG_RETENTION, entity_types, before)
        except (DatabaseUrlError, PurgeFailed) as exc:
            raise dg.Failure(description=f"{sync.name} retention: {exc}") from None
        purged = ", ".join(f"{rows} from {table}" for table, rows in deleted.items())
        context.log.info(f"{sync.name} retention: rows older than {before:%Y-%m-%d %H:%M} UTC purged: {purged}")
        metadata: dict[str, dg.MetadataValue] = {table: dg.MetadataValue.int(rows) for table, rows in deleted.items()}
        metadata["purged_before_utc"] = dg.MetadataValue.timestamp(before.replace(tzinfo=dt.UTC))
        return dg.Output(None, metadata=metadata)

    @dg.job(
        name=f"{sync.name}_retention",
        description=f"Purges {sync.name}'s logs older than {retention.days} days ({tables}).",
    )
    def retention_job() -> None:
        purge_logs()

    return retention_job
