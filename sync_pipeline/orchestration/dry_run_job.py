"""The dry-run job: every entity previewed in sync order, nothing sent, nothing written.

A preview is not a sync, so it is not an asset materialization: it must not replace an asset's last
real materialization or check result, nor raise or clear alerts. Each entity gets an op that reads,
selects and validates exactly as its asset would, and records an `AssetObservation` on the asset,
tagged `sync_pipeline/dry_run`; the run carries the same tag, so the Runs list shows it as a dry run.

No `from __future__ import annotations` here: Dagster reads the op's `config` annotation at runtime.
"""

import dagster as dg

from sync_pipeline.orchestration.customers import customer_partitions
from sync_pipeline.orchestration.run_config import SyncRunConfig, selection_from
from sync_pipeline.orchestration.sync_assets import (
    DRY_RUN_TAG,
    delivery_policy,
    entity_plan,
    preview_observation,
    required_resource_keys,
    run_entity,
)
from sync_pipeline.settings import Settings
from sync_pipeline.specs.model import EntitySpec
from sync_pipeline.specs.sync import SyncSpec


def build_preview_op(sync: SyncSpec, spec: EntitySpec, settings: Settings) -> dg.OpDefinition:
    """The op previewing one entity; its run config selects records as the asset's does."""
    plan = entity_plan(sync, spec, settings)
    policy = delivery_policy(settings)
    log_columns = settings.scheduler_log.columns()
    asset_key = dg.AssetKey(spec.asset_name)

    @dg.op(
        name=f"preview_{spec.asset_name}",
        ins={"after": dg.In(dg.Nothing)},
        required_resource_keys=required_resource_keys(sync, spec, settings),
        description=f"What a sync of {spec.name} would send: counts and the first payload, without sending.",
    )
    def preview(context: dg.OpExecutionContext, config: SyncRunConfig) -> None:
        selection = selection_from(config, spec, plan.key_column, preview=True)
        report = run_entity(context, sync, plan, policy, log_columns, selection, True, settings)
        context.log_event(preview_observation(report, asset_key))

    return preview


def build_dry_run_job(sync: SyncSpec, settings: Settings) -> dg.JobDefinition:
    """Previews of every entity, chained in sync order so the run log reads like the nightly run's."""
    ops = [build_preview_op(sync, spec, settings) for spec in sync.entities]

    @dg.job(
        name=sync.dry_run_job_name,
        tags={DRY_RUN_TAG: "true"},
        partitions_def=customer_partitions(sync) if settings.customers is not None else None,
        description=f"Dry run of {sync.job_name}: counts and first payloads per entity; no POST, no writes.",
    )
    def dry_run_job() -> None:
        previous = None
        for op in ops:
            previous = op(previous) if previous is not None else op()

    return dry_run_job
