"""A sync run once per customer: one dynamic partition per active customer, kept in step by a sensor,
each partition's run with that customer's own API base URL and OAuth2 client credentials.

Everything a customer's run writes to the Log database (lock, cursor, SchedulerLog, rejected
records, credential use) is under the entity's EntityType followed by `/<customer>`, so customers
never share a lock or a mark; the SQL sink sets the customer on every row it writes (`partition_column`).

A customer's token is kept for the whole run: a later attempt (a retry after 60, 300, 900 s) or a later
entity of the same run calls with it while it is in force, as Zuora asks, and logs it as `reused`.

A dead-lettered customer marked by `sync-pipeline requeue` gets one run from the sensor per mark.
"""

import dataclasses
import datetime as dt
import json
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

import dagster as dg
import sqlalchemy as sa

from sync_pipeline.connectors.zuora.customers import CustomerCredentials, CustomerProblem
from sync_pipeline.engine.audit.credential_log import CredentialUseLog, CredentialUser
from sync_pipeline.engine.entity_sync import EntitySyncPlan
from sync_pipeline.engine.http.client import TransportClient
from sync_pipeline.engine.http.credential_use import CredentialUse
from sync_pipeline.engine.http.rate_limit import RateLimiter
from sync_pipeline.engine.http.retry import RetryPolicy
from sync_pipeline.engine.http.transport import Transport
from sync_pipeline.engine.sources.sql_table import SourceUnavailable
from sync_pipeline.engine.state.dead_letters import DeadLetter, DeadLetters
from sync_pipeline.engine.state.tracking import TrackingUnavailable
from sync_pipeline.orchestration.resources import CUSTOMERS
from sync_pipeline.resources.customers import CustomerDirectory
from sync_pipeline.resources.database import DatabaseUrlError, SyncDatabase
from sync_pipeline.settings import ApiSettings, Settings, endpoint_url
from sync_pipeline.specs.sync import SyncSpec

if TYPE_CHECKING:
    from sync_pipeline.engine.http.oauth import ClientCredentials


def customer_partitions(sync: SyncSpec) -> dg.DynamicPartitionsDefinition:
    """The sync's partitions: one per active customer, named by its customer id."""
    return dg.DynamicPartitionsDefinition(name=f"{sync.name}_customers")


@dataclasses.dataclass
class CustomerRun:
    """One customer's plan (its EntityType, endpoint and partition column), its API client and this run's
    use of its credentials (token counts; closing the client ends the use)."""

    plan: EntitySyncPlan
    client: TransportClient
    credentials: CredentialUse


class CustomerClient(TransportClient):
    """A customer's API client: closing it also ends its use of the credentials (the last token's calls logged)."""

    def __init__(self, transport: Transport, use: CredentialUse) -> None:
        super().__init__(transport)
        self.use = use

    def close(self) -> None:
        """Close the pooled connections and end the credential use."""
        try:
            super().close()
        finally:
            self.use.close()


def customer_run(
    context: dg.OpExecutionContext, sync: SyncSpec, plan: EntitySyncPlan, settings: Settings
) -> CustomerRun | str:
    """The run's customer (its partition) ready to be synced, or why it cannot be (never its secret)."""
    api = settings.api
    assert settings.customers is not None and api is not None  # settings require both for a per-customer sync
    directory: CustomerDirectory = getattr(context.resources, sync.resource_key(CUSTOMERS))
    customer_id = context.partition_key
    try:
        checked = directory.customer(customer_id)
    except (SourceUnavailable, ValueError, sa.exc.SQLAlchemyError) as exc:  # the table, its URL or the key
        return f"customer {customer_id}: cannot read the customers: {exc}"
    if isinstance(checked, CustomerProblem):
        return checked.describe()
    entity_type = f"{plan.entity_type}/{customer_id}"
    log_db: SyncDatabase = getattr(context.resources, sync.resource_key("log_db"))
    try:
        log_engine = log_db.get_engine()
    except DatabaseUrlError as exc:
        return str(exc)
    user = CredentialUser(entity_type, customer_id, checked.client_id, context.run.run_id)
    use = CredentialUse(
        run_credentials(sync, context.run.run_id, checked, settings), CredentialUseLog(log_engine, user, context.log)
    )
    client = CustomerClient(_transport(use, api, settings.retries.max_delay_seconds), use)
    sink = plan.spec.sql_sink
    endpoint = settings.entities[plan.spec.name].endpoint or ""
    customer_plan = dataclasses.replace(
        plan,
        entity_type=entity_type,
        endpoint_url=endpoint_url(checked.base_url, endpoint) if endpoint else "",
        fixed_columns={sink.partition_column: customer_id} if sink and sink.partition_column else {},
    )
    context.log.info(
        f"customer {customer_id}: {checked.environment} ({checked.data_center}), client {checked.client_id}"
    )
    return CustomerRun(customer_plan, client, use)


_kept_credentials: dict[tuple[str, str], tuple[str, "ClientCredentials"]] = {}
"""Per (sync, customer): the last run that used the customer's credentials, and them."""
_kept_lock = threading.Lock()


def run_credentials(
    sync: SyncSpec, run_id: str, checked: CustomerCredentials, settings: Settings
) -> "ClientCredentials":
    """The customer's credentials for this run: those an earlier attempt or entity of the run used, with their
    token, if the customer's client is unchanged; else new ones, which replace those of an earlier run."""
    # authlib is loaded only by a sync run per customer: importing it costs every run's start-up 0.17 s.
    from sync_pipeline.engine.http.oauth import ClientCredentials

    customers, api, retries = settings.customers, settings.api, settings.retries
    assert customers is not None and api is not None
    key = (sync.name, checked.customer_id)
    with _kept_lock:
        kept_run, kept = _kept_credentials.get(key, ("", None))
        client = (checked.token_url, checked.client_id, checked.client_secret)
        if kept is not None and kept_run == run_id and kept.same_client(*client):
            return kept
        credentials = ClientCredentials(
            *client,
            expiry_margin_seconds=customers.token_expiry_margin_seconds,
            retry_policy=RetryPolicy(
                retries.max_attempts,
                retries.initial_delay_seconds,
                retries.max_delay_seconds,
                retries.max_total_wait_seconds,
            ),
            timeout_seconds=api.timeout_seconds,
            verify_tls=api.verify_tls,
        )
        _kept_credentials[key] = (run_id, credentials)
    if kept is not None:
        kept.close()
    return credentials


def _transport(auth: CredentialUse, api: ApiSettings, max_wait: float) -> Transport:
    return Transport(
        auth,
        timeout_seconds=api.timeout_seconds,
        call_deadline_seconds=api.deadline_seconds,
        verify_tls=api.verify_tls,
        rate_limit=RateLimiter(max_wait),
    )


def build_customers_sensor(sync: SyncSpec, settings: Settings) -> dg.SensorDefinition:
    """Adds a partition for each new active customer, removes those of customers no longer active, and launches
    one run of each customer `sync-pipeline requeue` marked among the dead letters."""
    assert settings.customers is not None
    partitions = customer_partitions(sync)
    log_key = sync.resource_key("log_db")

    @dg.sensor(
        name=f"{sync.name}_customers",
        job_name=sync.job_name,
        minimum_interval_seconds=settings.customers.sensor_interval_seconds,
        required_resource_keys={sync.resource_key(CUSTOMERS), log_key},
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Keeps {partitions.name} in step with the active customers of the customers table, and "
        "runs each customer re-queued by `sync-pipeline requeue` once.",
    )
    def customers_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        directory: CustomerDirectory = getattr(context.resources, sync.resource_key(CUSTOMERS))
        active = {checked.customer_id for checked in directory.customers()}
        known = set(context.instance.get_dynamic_partitions(str(partitions.name)))
        requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
        if active - known:
            requests.append(partitions.build_add_request(sorted(active - known)))
        if known - active:
            requests.append(partitions.build_delete_request(sorted(known - active)))
        log_db: SyncDatabase = getattr(context.resources, log_key)
        try:
            letters = DeadLetters(log_db.get_engine()).listed()
        except (TrackingUnavailable, DatabaseUrlError) as exc:
            context.log.warning(f"{sync.name}: re-queued customers not read, none launched this time: {exc}")
            return dg.SensorResult(dynamic_partitions_requests=requests, cursor=context.cursor)
        marked = requeue_run_keys(sync, letters)
        launched = set(json.loads(context.cursor)) if context.cursor else set()
        runs: list[dg.RunRequest] = []
        for customer, run_key in sorted(marked.items()):
            if run_key in launched:
                continue
            if customer not in active:
                context.log.warning(f"{sync.name}: customer {customer} is re-queued but not active: no run")
                continue
            runs.append(dg.RunRequest(run_key=run_key, partition_key=customer, tags={REQUEUED_TAG: run_key}))
        # The cursor holds the marks answered that are still in the table; the run key alone would also keep
        # each mark to one run, should the cursor be reset.
        cursor = json.dumps(sorted(marked.values()))
        return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests, cursor=cursor)

    return customers_sensor


REQUEUED_TAG = "sync_pipeline/requeued"
"""Tag of a run launched for a re-queued customer: the mark's run key."""


def requeue_run_keys(sync: SyncSpec, letters: Iterable[DeadLetter]) -> dict[str, str]:
    """The run key of each customer of the sync with a re-queue mark among `letters`, from its latest mark:
    `requeue:<customer>:<RequeuedAt>`, so a mark gets one run and a new mark another."""
    prefixes = [f"{sync.entity_type(spec)}/" for spec in sync.entities]
    marks: dict[str, dt.datetime] = {}
    for letter in letters:
        prefix = next((prefix for prefix in prefixes if letter.entity_type.startswith(prefix)), None)
        if letter.requeued_at is None or prefix is None:
            continue
        customer = letter.entity_type.removeprefix(prefix)
        marks[customer] = max(marks.get(customer, letter.requeued_at), letter.requeued_at)
    return {customer: f"requeue:{customer}:{at.isoformat()}" for customer, at in marks.items()}


def build_customers_schedule(sync: SyncSpec, settings: Settings) -> dg.ScheduleDefinition:
    """One run per customer partition at the schedule's time."""
    schedule = settings.schedule
    partitions = customer_partitions(sync)

    @dg.schedule(
        name=sync.schedule_name,
        job_name=sync.job_name,
        cron_schedule=schedule.cron,
        execution_timezone=schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if schedule.enabled else dg.DefaultScheduleStatus.STOPPED,
    )
    def every_customer(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        customers = context.instance.get_dynamic_partitions(str(partitions.name))
        stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "now"
        return [dg.RunRequest(run_key=f"{customer}:{stamp}", partition_key=customer) for customer in customers]

    return every_customer
