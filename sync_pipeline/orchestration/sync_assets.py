"""One asset per entity spec, chained in spec order so the dependency edges enforce the sync order.

No `from __future__ import annotations` here: Dagster reads the `context` annotation at runtime.
"""

import datetime as dt
import gc
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import dagster as dg
import sqlalchemy as sa

from sync_pipeline.engine.audit.log_queries import entity_summary
from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.entity_sync import DeliveryPolicy, EntitySyncPlan, EntitySyncReport, sync_entity
from sync_pipeline.engine.http.api import Acknowledgement, BatchPoster, PerRecordResults, RecordRequester
from sync_pipeline.engine.mapping.field_map import FieldMapError, field_map_from
from sync_pipeline.engine.sinks.http_batch import RetryPolicy
from sync_pipeline.engine.state.dead_letters import DeadLetters
from sync_pipeline.engine.state.references import ReferencedEntity
from sync_pipeline.engine.state.retry_queue import queue_counts
from sync_pipeline.engine.state.selection import SEND_UNTRACKED, Selection
from sync_pipeline.engine.state.tracking import TrackingStore, TrackingUnavailable
from sync_pipeline.engine.tables import source_table
from sync_pipeline.orchestration.customers import customer_partitions, customer_run
from sync_pipeline.orchestration.resources import CUSTOMERS, api_resource_key
from sync_pipeline.orchestration.run_config import SyncRunConfig, selection_from
from sync_pipeline.orchestration.run_outcome import COMPLETE, OUTCOME, fail_run_if_incomplete
from sync_pipeline.resources.api_client import SyncApiClient
from sync_pipeline.resources.database import DatabaseUrlError, SyncDatabase
from sync_pipeline.settings import FIRST_WINDOW_DAYS, AcknowledgementSettings, Settings
from sync_pipeline.specs.model import EntitySpec, Reference, StateKind
from sync_pipeline.specs.sync import SyncSpec

CHECK_NAME = "all_records_delivered"
DRY_RUN_TAG = "sync_pipeline/dry_run"
"""Tag of a dry run's run and of its observations: nothing was sent or written."""
HISTORY_WINDOW = dt.timedelta(hours=24)
"""The window of the call-attempt success figure on each materialization."""


def entity_plan(sync: SyncSpec, spec: EntitySpec, settings: Settings) -> EntitySyncPlan:
    """Bind an entity of a sync to this deployment's table, key, endpoint and batch size; its mapping is
    checked against its fields here, so a wrong one fails the load (`FieldMapError`)."""
    where = settings.entities[spec.name]
    per_customer = settings.customers is not None
    try:
        mapping = field_map_from(spec.mapping, spec.fields) if spec.mapping else None
    except FieldMapError as exc:
        raise FieldMapError(f"entities.{spec.name}.mapping: {exc}") from None
    return EntitySyncPlan(
        spec=spec,
        entity_type=sync.entity_type(spec),
        table=source_table(spec, where) if spec.source_db else None,
        key_column=where.key_column,
        # A sync run per customer resolves its endpoint against each customer's base URL, in the run.
        endpoint_url=settings.endpoint_url(spec.name) if where.endpoint and not per_customer else where.endpoint or "",
        # An HTTP source reads on its own API (`source_api`), which may not be the sink's.
        source_url=settings.source_url(spec.name)
        if spec.http_source is not None and (where.source_endpoint or where.endpoint) and not per_customer
        else "",
        batch_size=settings.batch_size_for(spec.name),
        mapping=mapping,
        target_table=where.target_table,
        references=tuple(_referenced(sync, ref, settings) for ref in spec.references),
        lookback=dt.timedelta(seconds=where.lookback_seconds),
        first_window=dt.timedelta(days=where.first_window_days or FIRST_WINDOW_DAYS),
    )


def _referenced(sync: SyncSpec, reference: Reference, settings: Settings) -> ReferencedEntity:
    """A reference bound to the EntityType it points at, its value read as that entity's key is (a GUID's case
    and form canonical, as its row hashes keep it)."""
    target = sync.entity(reference.entity)
    key_type = target.field(settings.entities[target.name].key_column).type
    return ReferencedEntity(reference.field, sync.entity_type(target), key_type)


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    """Retries, rejection splitting, what acknowledges a batch, the lock lease and progress, from the settings."""
    retries = settings.retries
    acknowledgement = settings.api.acknowledgement if settings.api else AcknowledgementSettings()
    results = acknowledgement.results
    return DeliveryPolicy(
        retry=RetryPolicy(
            max_attempts=retries.max_attempts,
            initial_delay=retries.initial_delay_seconds,
            max_delay=retries.max_delay_seconds,
            max_total_wait=retries.max_total_wait_seconds,
        ),
        max_split_depth=settings.rejections.max_split_depth,
        max_calls_per_batch=settings.rejections.max_calls_per_batch,
        acknowledgement=Acknowledgement(
            statuses=frozenset(acknowledgement.statuses),
            content_types=frozenset(acknowledgement.content_types),
            results=PerRecordResults(
                path=results.path,
                id_field=results.id_field,
                status_field=results.status_field,
                accepted=frozenset(str(value).lower() for value in results.accepted),
                statuses=frozenset(results.statuses),
            )
            if results
            else None,
        ),
        lock_lease_seconds=settings.locking.lease_seconds,
        lock_wait_seconds=settings.locking.wait_seconds,
        max_in_flight=settings.api.max_in_flight if settings.api else 1,
        max_details_in_flight=settings.api.max_details_in_flight if settings.api else 1,
        progress_interval_seconds=settings.progress.interval_seconds,
        max_record_attempts=retries.max_record_attempts,
    )


def skipped_as(selection: Selection, by_row_hash: bool = False) -> str:
    """What the records a sync read and did not send are: unchanged (by row hash), already tracked, or not
    selected by a resend."""
    if by_row_hash:
        return "unchanged"
    return "already_tracked" if selection.resend == "none" else "not_selected"


def report_metadata(
    report: EntitySyncReport, selection: Selection, tracked_now: int | None, skipped: str | None = None
) -> dict[str, dg.MetadataValue]:
    """The figures of one real sync; `dagster/row_count` is what the receiver holds from us, as tracked.
    Records not sent are `skipped` (see `skipped_as`; default: as for a batch sink)."""
    skipped = skipped or skipped_as(selection)
    counts = {
        "rows_found": report.rows_found,
        skipped: report.already_tracked,
        "sent": report.sent,
        "failed": report.failed,
        "batches_ok": report.batches_ok,
        "batches_failed": report.batches_failed,
        "rejected": report.rejected,
        "delivered_untracked": report.delivered_untracked,
        "api_calls": report.api_calls,
        "retries": report.retries,
    }
    metadata: dict[str, dg.MetadataValue] = {name: dg.MetadataValue.int(value) for name, value in counts.items()}
    if report.candidates is not None:
        metadata["candidates"] = dg.MetadataValue.int(report.candidates)
    if report.token_requests is not None:
        metadata["token_requests"] = dg.MetadataValue.int(report.token_requests)
    optional = {
        "deleted": report.deleted,
        "inserted": report.inserted,
        "updated": report.updated,
        "created": report.created,
        "adopted": report.adopted,
        "held_back": report.held_back,
        "dead": report.dead,
        "conflicts": report.conflicts,
    }
    if report.details is not None:
        optional[f"{report.details.name}s_ok"] = report.details.fetched - report.details.failed
        optional[f"{report.details.name}s_failed"] = report.details.failed
    for name, value in optional.items():
        if value is not None:
            metadata[name] = dg.MetadataValue.int(value)
    if report.throttled:
        metadata["throttled"] = dg.MetadataValue.int(report.throttled)
    if report.failed_calls is not None and report.api_calls:
        metadata["call_error_percent"] = dg.MetadataValue.float(round(100 * report.failed_calls / report.api_calls, 2))
    if tracked_now is not None:
        metadata["dagster/row_count"] = dg.MetadataValue.int(tracked_now)
    metadata["duration_seconds"] = dg.MetadataValue.float(round(report.duration_seconds, 3))
    rate = report.sent / report.duration_seconds if report.duration_seconds > 0 else 0.0
    metadata["records_per_second"] = dg.MetadataValue.float(round(rate, 1))
    if report.rejected_ids:
        metadata["rejected_ids"] = dg.MetadataValue.text(", ".join(report.rejected_ids))
    metadata[OUTCOME] = dg.MetadataValue.text(report_problem(report) or COMPLETE)
    return metadata


def report_problem(report: EntitySyncReport) -> str | None:
    """Why the entity did not deliver everything it selected, or None when it did."""
    if report.succeeded:
        return None
    return report.stopped_because or report.first_batch_error or f"{report.rejected} record(s) rejected"


def history_metadata(
    log_db: SyncDatabase, entity_type: str, now: dt.datetime, retry_queue: bool = False
) -> dict[str, dg.MetadataValue]:
    """Call attempts that succeeded over the last day, the last success and refused records not yet
    delivered; with `retry_queue` (a per-record sink), the records queued for the next run and those
    dead-lettered; nothing if the Log database cannot be read."""
    try:
        summary = entity_summary(log_db.get_engine(), entity_type, since=now - HISTORY_WINDOW)
        queue = queue_counts(log_db.get_engine(), entity_type) if retry_queue else None
    except (sa.exc.SQLAlchemyError, TrackingUnavailable):
        return {}
    metadata: dict[str, dg.MetadataValue] = {"rejected_records": dg.MetadataValue.int(summary["rejected_records"])}
    if queue is not None:
        metadata["queued_records"] = dg.MetadataValue.int(queue.queued)
        metadata["dead_records"] = dg.MetadataValue.int(queue.dead)
    if summary["call_success_rate"] is not None:
        percent = round(summary["call_success_rate"] * 100, 2)
        metadata["attempt_success_percent_24h"] = dg.MetadataValue.float(percent)
    if summary["last_success_utc"]:
        last = dt.datetime.fromisoformat(summary["last_success_utc"]).replace(tzinfo=dt.UTC)
        metadata["last_success_utc"] = dg.MetadataValue.timestamp(last)
    return metadata


def preview_observation(report: EntitySyncReport, asset_key: dg.AssetKey) -> dg.AssetObservation:
    """A dry run's counts and first payload: an observation, so the last real sync's status stays."""
    assert report.preview is not None
    problem = report.stopped_because or "; ".join(report.preview.refusals) or None
    metadata: dict[str, dg.MetadataValue] = {
        "dry_run": dg.MetadataValue.bool(True),
        "rows_found": dg.MetadataValue.int(report.rows_found),
        "already_tracked": dg.MetadataValue.int(report.already_tracked),
        "would_send": dg.MetadataValue.int(report.preview.would_send),
        "would_refuse": dg.MetadataValue.int(report.preview.would_refuse),
        "batches": dg.MetadataValue.int(report.preview.batches),
        "problem": dg.MetadataValue.text(problem or "none: every selected record would be sent"),
        "first_payload": dg.MetadataValue.md(f"```json\n{report.preview.first_payload or '(nothing to send)'}\n```"),
    }
    return dg.AssetObservation(asset_key=asset_key, metadata=metadata, tags={DRY_RUN_TAG: "true"})


def report_result(
    report: EntitySyncReport,
    asset_key: dg.AssetKey,
    selection: Selection = SEND_UNTRACKED,
    tracked_now: int | None = None,
    history: dict[str, dg.MetadataValue] | None = None,
    skipped: str | None = None,
) -> dg.MaterializeResult:
    """The materialization plus a non-blocking ERROR check, so later entities still run."""
    problem = report_problem(report)
    check = dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=CHECK_NAME,
        passed=problem is None,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "batches_failed": report.batches_failed,
            "failed": report.failed,
            "rejected": report.rejected,
            "stopped_early": report.stopped_because is not None,
            **({"first_error": problem} if problem else {}),
        },
        description=problem,
    )
    metadata = {**report_metadata(report, selection, tracked_now, skipped), **(history or {})}
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


def run_entity(
    context: dg.OpExecutionContext,
    sync: SyncSpec,
    plan: EntitySyncPlan,
    policy: DeliveryPolicy,
    log_columns: Mapping[str, str],
    selection: Selection,
    dry_run: bool,
    settings: Settings | None = None,
) -> EntitySyncReport:
    """Sync (or preview) one entity with the run's resources and log what it did in one line; with
    `settings` of a sync run per customer, as the run's customer (its partition), over its own API client."""
    if settings is not None and settings.customers is not None:
        customer = customer_run(context, sync, plan, settings)
        if isinstance(customer, str):
            context.log.error(f"{plan.spec.name} stopped early: {customer}")
            return EntitySyncReport(f"{plan.entity_type}/{context.partition_key}", stopped_because=customer)
        try:
            report = _run_entity(context, sync, customer.plan, policy, log_columns, selection, dry_run, customer.client)
        finally:
            customer.client.close()
        report.token_requests = customer.credentials.counts.requests
        return report
    where = settings.entities[plan.spec.name] if settings is not None else None
    sink_api, source_api = (where.sink_api, where.source_api) if where is not None else (None, None)
    api: SyncApiClient | None = getattr(context.resources, sync.resource_key(api_resource_key(sink_api)), None)
    reader = getattr(context.resources, sync.resource_key(api_resource_key(source_api)), None)
    return _run_entity(context, sync, plan, policy, log_columns, selection, dry_run, api, reader)


YOUNG_OBJECTS_PER_COLLECTION = 50_000
"""The collector's first threshold while an entity syncs (Python's is 700): a few pages' worth of objects."""


@contextmanager
def quiet_collector() -> Iterator[None]:
    """While an entity syncs, keep what the process held before it (Dagster, the code location, the run's
    resources: hundreds of thousands of objects) out of the garbage collector's view, and let it run
    less often; then hand both back.

    An entity allocates a few dicts per record, so the collector runs often, and each of its full
    collections would walk all of those objects again: with them frozen (`gc.freeze`), a 300,000-record
    Zuora pull's engine took 8.4 s instead of 10.2 s, and 1,000,000 half-tracked Users 11.3 s instead of
    15.1 s (same session). No collection first (0.1 s on a loaded code location, every entity): garbage
    frozen with the rest is handed back by `gc.unfreeze` afterwards, and collected then, as is what the
    run drops later.

    Its young collections then still ran every 700 allocations, each walking the page and batch in
    hand, and moved them on to older generations walked again: 3,942 young and 358 middle collections,
    0.9 s of a 300,000-record pull. At `YOUNG_OBJECTS_PER_COLLECTION` most records are freed before a
    collection sees them: 550 and 49, 0.17 s (1,000,000 Users with nothing tracked: engine 15.5 to 16.2 s
    before, 13.6 to 13.9 s after, alternated in one session). Records hold no reference cycles and are
    freed by their reference counts as before; only cyclic garbage waits longer, a few pages' worth at
    most.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS_PER_COLLECTION, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _run_entity(
    context: dg.OpExecutionContext,
    sync: SyncSpec,
    plan: EntitySyncPlan,
    policy: DeliveryPolicy,
    log_columns: Mapping[str, str],
    selection: Selection,
    dry_run: bool,
    api: BatchPoster | RecordRequester | None,
    source_api: RecordRequester | None = None,
) -> EntitySyncReport:
    spec = plan.spec
    log_db: SyncDatabase = getattr(context.resources, sync.resource_key("log_db"))
    source = _database(context, sync, spec.source_db)
    target = _database(context, sync, spec.sql_sink.db if spec.sql_sink else None)
    try:
        tracking = TrackingStore(log_db.get_engine(), SchedulerLogWriter(log_columns, context.run.run_id))
        source_engine = source.get_engine() if source else None
        target_engine = target.get_engine() if target else None
    except DatabaseUrlError as exc:  # this entity stops; entities on the other databases run
        context.log.error(f"{spec.name} stopped early: {exc}")
        return EntitySyncReport(plan.entity_type, stopped_because=str(exc))
    read_from = f"{plan.source_name} on {source.describe()}" if source else plan.source_name
    write_to = f"{plan.destination_name} on {target.describe()}" if target else plan.destination_name
    context.log.info(f"{spec.name}: {read_from} -> {write_to}")
    owner = f"{socket.gethostname()}:{os.getpid()}:run {context.run.run_id}"
    with quiet_collector():
        report = sync_entity(
            plan,
            source_engine,
            tracking,
            cast(BatchPoster, api),
            context.log,
            owner,
            policy,
            selection,
            dry_run,
            target=target_engine,
            run_id=context.run.run_id,
            source_api=source_api,
        )
    if report.preview:
        outcome = f"would send {report.preview.would_send}, would refuse {report.preview.would_refuse} (dry run)"
    elif report.inserted is not None:  # a SQL sink: rows written, not calls
        outcome = (
            f"inserted {report.inserted}, updated {report.updated}, rejected {report.rejected} in "
            f"{report.batches_ok} written batches after {report.api_calls} calls"
        )
    else:
        outcome = f"sent {report.sent}, failed {report.failed}, rejected {report.rejected} in {report.api_calls} calls"
    context.log.info(
        f"{spec.name}: found {report.rows_found}, skipped {report.already_tracked} as "
        f"{skipped_as(selection, spec.state is not StateKind.NEVER_SENT).replace('_', ' ')}, {outcome}, "
        f"{report.duration_seconds:.1f}s"
    )
    return report


def build_entity_asset(
    sync: SyncSpec, spec: EntitySpec, settings: Settings, upstream: dg.AssetKey | None
) -> dg.AssetsDefinition:
    """The asset that syncs one entity; reads its source through the resource named in the spec.

    The last entity of a run's selection fails its step, after its own materialization, when any
    entity of the run did not deliver everything: the run then ends as failed once every entity
    had its turn (a failed check alone leaves a run green).
    """
    plan = entity_plan(sync, spec, settings)
    policy = delivery_policy(settings)
    log_columns = settings.scheduler_log.columns()
    per_customer = settings.customers is not None

    @dg.asset(
        name=spec.asset_name,
        group_name=sync.group,
        deps=[upstream] if upstream else None,
        required_resource_keys=required_resource_keys(sync, spec, settings),
        partitions_def=customer_partitions(sync) if per_customer else None,
        pool=sync.name if per_customer else None,
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_NAME,
                asset=spec.asset_name,
                description="Every batch was acknowledged and the entity ran to the end.",
            )
        ],
        kinds={"sql", "api"},
        owners=list(settings.assets.owners),
        tags=dict(settings.assets.tags),
        description=asset_description(plan),
        metadata=asset_metadata(plan),
    )
    def sync_asset(context: dg.AssetExecutionContext, config: SyncRunConfig) -> Iterator[dg.MaterializeResult]:
        selection = selection_from(config, spec, plan.key_column)
        report = run_entity(context.op_execution_context, sync, plan, policy, log_columns, selection, False, settings)
        if per_customer:
            retry_if_passing(context, report, settings)
            keep_dead_letter(context, sync, report)
        log_db: SyncDatabase = getattr(context.resources, sync.resource_key("log_db"))
        never_sent = spec.state is StateKind.NEVER_SENT
        tracked_now = report.tracked
        if never_sent and tracked_now is None:
            tracked_now = tracked_count(log_db, report.entity)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        history = history_metadata(log_db, report.entity, now, retry_queue=spec.record_sink is not None)
        yield report_result(
            report,
            context.asset_key,
            selection,
            tracked_now,
            history,
            skipped_as(selection, not never_sent),
        )
        fail_run_if_incomplete(context, spec, sync.entities, report_problem(report))

    return sync_asset


def retry_if_passing(context: dg.AssetExecutionContext, report: EntitySyncReport, settings: Settings) -> None:
    """Raise `dg.RetryRequested` after the next of `customers.retry_delays_seconds` when the customer's run
    stopped for a passing cause and retries are left; the last attempt's result is kept as it is."""
    assert settings.customers is not None
    delays = settings.customers.retry_delays_seconds
    attempt = context.retry_number
    if report.retryable and attempt < len(delays):
        wait = delays[attempt]
        context.log.warning(
            f"{report.entity} stopped for a passing cause; attempt {attempt + 2} of {len(delays) + 1} "
            f"in {wait:g}s: {report.stopped_because}"
        )
        raise dg.RetryRequested(max_retries=len(delays), seconds_to_wait=wait)


def keep_dead_letter(context: dg.AssetExecutionContext, sync: SyncSpec, report: EntitySyncReport) -> None:
    """After a customer's last attempt: keep its failure in TB_R_SYNC_DEAD_LETTER, or remove the row of one
    that succeeds now; a Log database that cannot be written is logged, the run's outcome stays as it is."""
    log_db: SyncDatabase = getattr(context.resources, sync.resource_key("log_db"))
    problem = report_problem(report)
    try:
        letters = DeadLetters(log_db.get_engine())
        if problem is None:
            if letters.clear(report.entity):
                context.log.info(f"{report.entity}: succeeded; its dead letter is removed")
            return
        letters.record(report.entity, problem, context.retry_number + 1, context.run.run_id)
        context.log.error(f"{report.entity}: dead-lettered after {context.retry_number + 1} attempt(s): {problem}")
    except (TrackingUnavailable, sa.exc.SQLAlchemyError) as exc:
        context.log.error(f"{report.entity}: cannot keep its dead letter: {exc}")


def required_resource_keys(sync: SyncSpec, spec: EntitySpec, settings: Settings) -> set[str]:
    """The resources an entity's asset or preview uses: its databases, the Log database, the APIs it calls
    (a per-customer sync: the customer directory, each customer's client being built in its run)."""
    where = settings.entities[spec.name]
    if settings.customers is not None:
        api = [CUSTOMERS] if spec.calls_the_api else []
    else:
        api = [api_resource_key(name) for name in where.apis_called(spec)]
    keys = [*spec.databases, "log_db", *api]
    return {sync.resource_key(key) for key in keys}


def _database(context: dg.OpExecutionContext, sync: SyncSpec, key: str | None) -> SyncDatabase | None:
    """The run's resource of the database `key`, if the entity has one there."""
    return getattr(context.resources, sync.resource_key(key)) if key else None


def asset_description(plan: EntitySyncPlan) -> str:
    """What the entity's asset does, in the words of its state and sink."""
    spec, source, destination = plan.spec, plan.source_name, plan.destination_name
    if spec.sql_sink is not None:
        how = "Upserts (last write wins)" if spec.sql_sink.mode == "upsert" else "Updates matched rows with"
        which = "changed " if spec.state is StateKind.SINCE_CURSOR else ""
        return f"{how} {which}{spec.name} records from {source} into {destination}."
    if spec.record_sink is not None:
        return f"Creates new and updates changed {spec.name} records from {source} at the API."
    return f"Pushes untracked {spec.name} records from {source} to the API."


def asset_metadata(plan: EntitySyncPlan) -> dict[str, Any]:
    """Where the entity is read and written, shown on the asset in the UI."""
    metadata: dict[str, Any] = {"batch_size": plan.batch_size, "state": plan.spec.state.value}
    if plan.endpoint_url:
        metadata["endpoint"] = dg.MetadataValue.url(plan.endpoint_url)
    if plan.table is not None:
        metadata["source_table"] = plan.table.fullname
    if plan.target_table is not None:
        metadata["target_table"] = plan.target_table
    return metadata


def tracked_count(log_db: SyncDatabase, entity: str) -> int | None:
    """Records of the entity now tracked (acknowledged by the API); None if the Log database cannot say."""
    try:
        return TrackingStore(log_db.get_engine(), SchedulerLogWriter({})).tracked_count(entity)
    except (TrackingUnavailable, sa.exc.SQLAlchemyError):  # a bad URL is an ArgumentError
        return None


def build_entity_assets(sync: SyncSpec, settings: Settings) -> list[dg.AssetsDefinition]:
    """The sync's entity assets, each depending on the one before it."""
    assets: list[dg.AssetsDefinition] = []
    for spec in sync.entities:
        assets.append(build_entity_asset(sync, spec, settings, assets[-1].key if assets else None))
    return assets
