"""One asset per entity spec, chained in spec order so the dependency edges enforce the sync order.

No `from __future__ import annotations` here: Dagster reads the `context` annotation at runtime.
"""

import os
import socket
from collections.abc import Sequence

import dagster as dg
import sqlalchemy as sa

from sync_pipeline.defs.run_config import SyncRunConfig, selection_from
from sync_pipeline.engine.delivery import RetryPolicy
from sync_pipeline.engine.entity_sync import DeliveryPolicy, EntitySyncPlan, EntitySyncReport, sync_entity
from sync_pipeline.engine.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.tracking import TrackingStore
from sync_pipeline.entities import EntitySpec
from sync_pipeline.resources.api_client import SyncApiClient
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import Settings
from sync_pipeline.sync_log import entity_summary
from sync_pipeline.tables import source_table

GROUP = "tamhr_sync"
CHECK_NAME = "all_records_delivered"


def entity_plan(spec: EntitySpec, settings: Settings) -> EntitySyncPlan:
    """Bind an entity spec to this deployment's table, key, endpoint and batch size."""
    where = settings.entities[spec.name]
    return EntitySyncPlan(
        spec=spec,
        table=source_table(spec, where),
        key_column=where.key_column,
        endpoint_url=settings.endpoint_url(spec.name),
        batch_size=settings.batch_size_for(spec.name),
    )


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    """Retries, rejection splitting and the lock lease, from the settings."""
    retries = settings.retries
    return DeliveryPolicy(
        retry=RetryPolicy(
            max_attempts=retries.max_attempts,
            initial_delay=retries.initial_delay_seconds,
            max_delay=retries.max_delay_seconds,
            max_total_wait=retries.max_total_wait_seconds,
        ),
        max_split_depth=settings.rejections.max_split_depth,
        lock_lease_seconds=settings.locking.lease_seconds,
        lock_wait_seconds=settings.locking.wait_seconds,
        max_in_flight=settings.api.max_in_flight,
    )


def report_metadata(report: EntitySyncReport) -> dict[str, dg.MetadataValue]:
    """The figures shown on each materialization; `dagster/row_count` is what the receiver now holds."""
    counts = {
        "rows_found": report.rows_found,
        "already_tracked": report.already_tracked,
        "sent": report.sent,
        "failed": report.failed,
        "batches_ok": report.batches_ok,
        "batches_failed": report.batches_failed,
        "rejected": report.rejected,
        "delivered_untracked": report.delivered_untracked,
        "api_calls": report.api_calls,
        "retries": report.retries,
        "dagster/row_count": report.already_tracked + report.sent,
    }
    metadata: dict[str, dg.MetadataValue] = {name: dg.MetadataValue.int(value) for name, value in counts.items()}
    metadata["duration_seconds"] = dg.MetadataValue.float(round(report.duration_seconds, 3))
    rate = report.sent / report.duration_seconds if report.duration_seconds > 0 else 0.0
    metadata["records_per_second"] = dg.MetadataValue.float(round(rate, 1))
    if report.rejected_ids:
        metadata["rejected_ids"] = dg.MetadataValue.text(", ".join(report.rejected_ids))
    return metadata


def history_metadata(log_db: SyncDatabase, entity: str) -> dict[str, dg.MetadataValue]:
    """Success rate of calls, last success and rejected records so far; nothing if the Log database is down."""
    try:
        summary = entity_summary(log_db.get_engine(), entity)
    except sa.exc.SQLAlchemyError:
        return {}
    metadata: dict[str, dg.MetadataValue] = {"rejected_records": dg.MetadataValue.int(summary["rejected_records"])}
    if summary["call_success_rate"] is not None:
        metadata["call_success_rate"] = dg.MetadataValue.float(summary["call_success_rate"])
    if summary["last_success_utc"]:
        metadata["last_success_utc"] = dg.MetadataValue.text(summary["last_success_utc"])
    return metadata


def dry_run_result(report: EntitySyncReport) -> dg.MaterializeResult:
    """A dry run's counts and first payload, tagged so it is never mistaken for a real sync."""
    assert report.preview is not None
    problem = report.stopped_because or "; ".join(report.preview.refusals) or None
    check = dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=problem is None,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"dry_run": True, "would_refuse": report.preview.would_refuse},
        description=f"dry run: {problem}" if problem else "dry run: every selected record would be sent",
    )
    metadata: dict[str, dg.MetadataValue] = {
        "dry_run": dg.MetadataValue.bool(True),
        "rows_found": dg.MetadataValue.int(report.rows_found),
        "already_tracked": dg.MetadataValue.int(report.already_tracked),
        "would_send": dg.MetadataValue.int(report.preview.would_send),
        "would_refuse": dg.MetadataValue.int(report.preview.would_refuse),
        "batches": dg.MetadataValue.int(report.preview.batches),
        "first_payload": dg.MetadataValue.md(f"```json\n{report.preview.first_payload or '(nothing to send)'}\n```"),
    }
    return dg.MaterializeResult(metadata=metadata, check_results=[check], tags={"sync_pipeline/dry_run": "true"})


def report_result(
    report: EntitySyncReport, asset_key: dg.AssetKey, history: dict[str, dg.MetadataValue] | None = None
) -> dg.MaterializeResult:
    """The materialization plus a non-blocking ERROR check, so later entities still run."""
    if report.preview is not None:
        return dry_run_result(report)
    problem = report.stopped_because or report.first_batch_error
    check = dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=CHECK_NAME,
        passed=report.succeeded,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "batches_failed": report.batches_failed,
            "failed": report.failed,
            "rejected": report.rejected,
            "stopped_early": report.stopped_because is not None,
            **({"first_error": problem} if problem else {}),
        },
        description=None if report.succeeded else problem,
    )
    return dg.MaterializeResult(metadata={**report_metadata(report), **(history or {})}, check_results=[check])


def build_entity_asset(spec: EntitySpec, settings: Settings, upstream: dg.AssetKey | None) -> dg.AssetsDefinition:
    """The asset that syncs one entity; reads its source through the resource named in the spec."""
    plan = entity_plan(spec, settings)
    policy = delivery_policy(settings)
    log_columns = settings.scheduler_log.columns()

    @dg.asset(
        name=spec.asset_name,
        group_name=GROUP,
        deps=[upstream] if upstream else None,
        required_resource_keys={spec.source_db, "log_db", "sync_api"},
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_NAME,
                asset=spec.asset_name,
                description="Every batch was acknowledged and the entity ran to the end.",
            )
        ],
        kinds={"sql", "api"},
        description=f"Pushes untracked {spec.name} records from {plan.table.fullname} to the API.",
        metadata={"endpoint": plan.endpoint_url, "source_table": plan.table.fullname, "batch_size": plan.batch_size},
    )
    def sync_asset(context: dg.AssetExecutionContext, config: SyncRunConfig) -> dg.MaterializeResult:
        selection = selection_from(config, spec, plan.key_column)
        source: SyncDatabase = getattr(context.resources, spec.source_db)
        log_db: SyncDatabase = context.resources.log_db
        api: SyncApiClient = context.resources.sync_api
        tracking = TrackingStore(log_db.get_engine(), SchedulerLogWriter(log_columns, context.run.run_id))
        context.log.info(f"{spec.name}: {plan.table.fullname} on {source.describe()} -> {plan.endpoint_url}")
        owner = f"{socket.gethostname()}:{os.getpid()}:run {context.run.run_id}"
        report = sync_entity(
            plan, source.get_engine(), tracking, api, context.log, owner, policy, selection, config.dry_run
        )
        outcome = (
            f"would send {report.preview.would_send}, would refuse {report.preview.would_refuse} (dry run)"
            if report.preview
            else f"sent {report.sent}, failed {report.failed}, rejected {report.rejected} in {report.api_calls} calls"
        )
        context.log.info(
            f"{spec.name}: found {report.rows_found}, skipped {report.already_tracked} as already sent, "
            f"{outcome}, {report.duration_seconds:.1f}s"
        )
        history = {} if report.preview else history_metadata(log_db, spec.name)
        return report_result(report, context.asset_key, history)

    return sync_asset


def build_entity_assets(specs: Sequence[EntitySpec], settings: Settings) -> list[dg.AssetsDefinition]:
    """All entity assets, each depending on the one before it."""
    assets: list[dg.AssetsDefinition] = []
    for spec in specs:
        assets.append(build_entity_asset(spec, settings, assets[-1].key if assets else None))
    return assets
