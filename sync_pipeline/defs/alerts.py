"""Alerts from a sensor: an entity's check failing run after run, failed API calls, a run too long, a failed run.

The sensor looks at the Dagster instance and at SchedulerLog every minute and keeps the set of
conditions it has announced in its cursor (JSON), so a condition gives one alert when it starts and
one when it clears, never one per evaluation. Every alert goes to the Dagster log and, when
SYNC_ALERT_WEBHOOK_URL is set, to that webhook as `{"text": ...}` (what Slack and Teams incoming
webhooks accept) with the same facts under `sync_alert`. A failed non-blocking check does not fail
its run, so no run-failure sensor would ever report it: that is why this sensor reads check history.

No `from __future__ import annotations` here: Dagster reads the sensor's parameter annotations at runtime.
"""

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
import requests
import sqlalchemy as sa
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster_shared.error import SerializableErrorInfo
from pydantic import Field

from sync_pipeline.defs.schedules import JOB_NAME
from sync_pipeline.defs.sync_assets import CHECK_NAME
from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.entities import TAMHR_ENTITIES, EntitySpec
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import AlertSettings
from sync_pipeline.sync_log import call_counts, first_failure

SENSOR_NAME = "tamhr_sync_alerts"
WEBHOOK_URL_ENV_VAR = "SYNC_ALERT_WEBHOOK_URL"
MAX_ERROR_TEXT = 500

CHECK_FAILING = "check_failing"
FAILED_CALLS = "failed_calls"
RUN_TOO_LONG = "run_too_long"
RUN_FAILED = "run_failed"

STARTED = "started"
RESOLVED = "resolved"

_COMPLETED_CHECK = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
_RUN_PROGRESS_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
}


class AlertNotDelivered(Exception):
    """The webhook did not take the alert; the message says why without the (secret) URL."""


class AlertWebhook(dg.ConfigurableResource):
    """An incoming webhook (Slack, Teams or alike) that alerts are POSTed to; without a URL, log only."""

    url: str | None = Field(
        default=None,
        description=f"Incoming-webhook URL; always given as EnvVar('{WEBHOOK_URL_ENV_VAR}'), never logged.",
        json_schema_extra={"dagster__is_secret": True},
    )
    timeout_seconds: float = 10.0

    @property
    def configured(self) -> bool:
        """True when there is a URL to post to."""
        return bool(self.url)

    def post(self, payload: Mapping[str, Any]) -> None:
        """POST the payload as JSON; raise `AlertNotDelivered` for a transport error or a non-2xx."""
        if not self.url:
            return
        try:
            response = requests.post(self.url, json=payload, timeout=self.timeout_seconds)
        except requests.RequestException as exc:
            # requests puts the URL (and with it the webhook's token) in its messages: name the class only.
            raise AlertNotDelivered(f"{type(exc).__name__} posting to the webhook") from None
        if not 200 <= response.status_code < 300:
            raise AlertNotDelivered(f"the webhook answered HTTP {response.status_code}")


def build_alert_webhook(environ: Mapping[str, str] = os.environ) -> AlertWebhook:
    """The webhook resource: its URL from SYNC_ALERT_WEBHOOK_URL through EnvVar when set, else log only.

    Dagster fails any evaluation that reads an unset EnvVar, so the choice is made when the code
    location loads; a newly set variable takes effect at the next reload, like every variable.
    """
    if environ.get(WEBHOOK_URL_ENV_VAR):
        return AlertWebhook(url=dg.EnvVar(WEBHOOK_URL_ENV_VAR))
    return AlertWebhook()


@dataclass(frozen=True)
class Alert:
    """One condition that holds now: which, for which entity, its figures, its first error and its run."""

    key: str
    condition: str
    entity: str
    summary: str
    counts: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None
    run_id: str | None = None

    def message(self, state: str, settings: AlertSettings, run_id: str | None = None) -> dict[str, Any]:
        """The webhook body: `text` for people, `sync_alert` with the same facts for machines."""
        run_id = run_id or self.run_id
        run_url = settings.run_url(run_id) if run_id else None
        headline = "[sync_pipeline ALERT]" if state == STARTED else "[sync_pipeline RESOLVED] cleared:"
        lines = [
            f"{headline} {self.summary}",
            f"Entity: {self.entity}",
            "Counts: " + (", ".join(f"{name}={value}" for name, value in self.counts.items()) or "-"),
            f"First error: {self.first_error or '-'}",
            f"Run: {run_url or '-'}",
        ]
        return {
            "text": "\n".join(lines),
            "sync_alert": {
                "state": state,
                "condition": self.condition,
                "entity": self.entity,
                "summary": self.summary,
                "counts": dict(self.counts),
                "first_error": self.first_error,
                "run_id": run_id,
                "run_url": run_url,
            },
        }


@dataclass
class AlertState:
    """The conditions already announced, kept in the sensor cursor as JSON."""

    active: dict[str, Alert] = field(default_factory=dict)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> "AlertState":
        """Read the cursor; an empty or unreadable one means nothing was announced yet."""
        try:
            raw = json.loads(cursor) if cursor else {}
            return cls({key: Alert(**value) for key, value in raw.get("active", {}).items()})
        except (ValueError, TypeError, AttributeError):
            return cls()

    def to_cursor(self) -> str:
        """The cursor to store for the next evaluation."""
        return json.dumps({"active": {key: asdict(alert) for key, alert in sorted(self.active.items())}})


def _error_text(error: SerializableErrorInfo | None, fallback: str) -> str:
    """The innermost cause of a Dagster error (the exception that really happened); `fallback` without one."""
    if error is None:
        return fallback
    while error.cause is not None:
        error = error.cause
    return str(error.message).strip()[:MAX_ERROR_TEXT]


@dataclass
class RunProgress:
    """What a run's steps have done so far, by entity."""

    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    first_error: str | None = None

    @property
    def in_progress(self) -> list[str]:
        """Entities whose step started and has not finished."""
        return [name for name in self.started if name not in self.finished and name not in self.failed]


def run_progress(instance: dg.DagsterInstance, run_id: str, specs: Sequence[EntitySpec]) -> RunProgress:
    """Read a run's step and check events: which entities started, finished or failed, and the first error."""
    entity_of = {spec.asset_name: spec.name for spec in specs}
    progress = RunProgress()
    run_error: str | None = None
    for record in instance.get_records_for_run(run_id, of_type=_RUN_PROGRESS_EVENTS).records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        entity = entity_of.get(event.step_key or "", event.step_key or "")
        if event.event_type == dg.DagsterEventType.STEP_START:
            progress.started.append(entity)
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            progress.finished.append(entity)
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            progress.failed.append(entity)
            error = _error_text(event.step_failure_data.error, "step failed")
            progress.first_error = progress.first_error or f"{entity}: {error}"
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed:
                problem = evaluation.description or "check failed"
                progress.first_error = progress.first_error or f"{entity}: {problem}"
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE:
            error_info = getattr(event.event_specific_data, "error", None)
            run_error = _error_text(error_info, record.event_log_entry.message)
    progress.first_error = progress.first_error or run_error
    return progress


def failing_check_alerts(instance: dg.DagsterInstance, specs: Sequence[EntitySpec], consecutive: int) -> list[Alert]:
    """(a) Entities whose `all_records_delivered` failed in each of their last `consecutive` evaluations."""
    alerts: list[Alert] = []
    for spec in specs:
        check_key = dg.AssetCheckKey(dg.AssetKey(spec.asset_name), CHECK_NAME)
        # Runs that never got to the check (a failed run) leave it PLANNED: they neither break nor extend a streak.
        records = instance.event_log_storage.get_asset_check_execution_history(
            check_key, limit=consecutive, status=_COMPLETED_CHECK
        )
        if len(records) < consecutive or any(r.status != AssetCheckExecutionRecordStatus.FAILED for r in records):
            continue
        latest = records[0].evaluation
        metadata = {name: entry.value for name, entry in (latest.metadata.items() if latest else [])}
        figures = {
            name: value for name, value in metadata.items() if isinstance(value, int) and not isinstance(value, bool)
        }
        error = metadata.get("first_error") or (latest.description if latest else None)
        alerts.append(
            Alert(
                key=f"{CHECK_FAILING}:{spec.asset_name}",
                condition=CHECK_FAILING,
                entity=spec.name,
                summary=f"{spec.name}: check {CHECK_NAME} failed in {consecutive} consecutive runs",
                counts={"consecutive_failed_runs": consecutive, **figures},
                first_error=str(error)[:MAX_ERROR_TEXT] if error else None,
                run_id=records[0].run_id,
            )
        )
    return alerts


def failed_call_alerts(
    log_engine: sa.Engine, now: dt.datetime, settings: AlertSettings, specs: Sequence[EntitySpec], run_id: str | None
) -> list[Alert]:
    """(b) More than `failed_call_ratio` of the API calls in the last window failed (SchedulerLog)."""
    since = now - dt.timedelta(minutes=settings.failed_call_window_minutes)
    names = [spec.name for spec in specs]
    counts = call_counts(log_engine, since=since, entities=names)
    calls = sum(entity.calls for entity in counts.values())
    failed = sum(entity.failed for entity in counts.values())
    if not calls or failed / calls <= settings.failed_call_ratio:
        return []
    first = first_failure(log_engine, since=since, entities=names)
    window = settings.failed_call_window_minutes
    return [
        Alert(
            key=FAILED_CALLS,
            condition=FAILED_CALLS,
            entity=", ".join(name for name, entity in counts.items() if entity.failed),
            summary=(
                f"{failed} of {calls} API calls ({failed / calls:.1%}) failed in the last {window} minutes "
                f"(alert above {settings.failed_call_ratio:.1%})"
            ),
            counts={"calls": calls, "failed_calls": failed},
            first_error=f"{first.entity}: {first.exception_message}"[:MAX_ERROR_TEXT] if first else None,
            run_id=run_id,
        )
    ]


def long_run_alerts(
    instance: dg.DagsterInstance, job_name: str, now: dt.datetime, max_minutes: int, specs: Sequence[EntitySpec]
) -> list[Alert]:
    """(c) Runs of the job that have been running for longer than `max_minutes`."""
    alerts: list[Alert] = []
    running = instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.STARTED]))
    for record in running:
        if record.start_time is None:
            continue
        minutes = (now.timestamp() - record.start_time) / 60
        if minutes <= max_minutes:
            continue
        run_id = record.dagster_run.run_id
        progress = run_progress(instance, run_id, specs)
        alerts.append(
            Alert(
                key=f"{RUN_TOO_LONG}:{run_id}",
                condition=RUN_TOO_LONG,
                entity=", ".join(progress.in_progress) or "-",
                summary=f"{job_name} run has been running for {minutes:.0f} minutes (limit {max_minutes})",
                counts={
                    "minutes_running": int(minutes),
                    "limit_minutes": max_minutes,
                    "entities_finished": len(progress.finished),
                    "entities_failed": len(progress.failed),
                },
                first_error=progress.first_error,
                run_id=run_id,
            )
        )
    return alerts


def failed_run_alerts(instance: dg.DagsterInstance, job_name: str, specs: Sequence[EntitySpec]) -> list[Alert]:
    """(d) The job's latest finished run failed; clears when a later run succeeds."""
    finished = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]),
        limit=1,
    )
    if not finished or finished[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return []
    run_id = finished[0].dagster_run.run_id
    progress = run_progress(instance, run_id, specs)
    return [
        Alert(
            key=f"{RUN_FAILED}:{job_name}",
            condition=RUN_FAILED,
            entity=", ".join(progress.failed) or "- (failed before any entity ran)",
            summary=f"{job_name} run failed",
            counts={"entities_finished": len(progress.finished), "entities_failed": len(progress.failed)},
            first_error=progress.first_error,
            run_id=run_id,
        )
    ]


def latest_run_id(instance: dg.DagsterInstance, job_name: str) -> str | None:
    """The job's most recent run, whatever its status."""
    records = instance.get_run_records(dg.RunsFilter(job_name=job_name), limit=1)
    return records[0].dagster_run.run_id if records else None


def utc_now() -> dt.datetime:
    """The sensor's clock: aware UTC."""
    return dt.datetime.now(dt.UTC)


def build_alert_sensor(
    settings: AlertSettings,
    job_name: str = JOB_NAME,
    specs: Sequence[EntitySpec] = TAMHR_ENTITIES,
    clock: Callable[[], dt.datetime] = utc_now,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The alert sensor; needs the `log_db` (SchedulerLog) and `alert_webhook` resources."""

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Alerts (Dagster log and {WEBHOOK_URL_ENV_VAR}) when a check fails "
            f"{settings.consecutive_failures} runs in a row, more than {settings.failed_call_ratio:.0%} of API calls "
            f"fail in {settings.failed_call_window_minutes} minutes, a run passes {settings.max_run_minutes} minutes, "
            "or a run fails; and again when each clears."
        ),
    )
    def tamhr_sync_alerts(
        context: dg.SensorEvaluationContext, log_db: SyncDatabase, alert_webhook: AlertWebhook
    ) -> dg.SensorResult:
        now = clock()
        instance = context.instance
        previous = AlertState.from_cursor(context.cursor)
        current = {
            alert.key: alert
            for alert in (
                *failing_check_alerts(instance, specs, settings.consecutive_failures),
                *long_run_alerts(instance, job_name, now, settings.max_run_minutes, specs),
                *failed_run_alerts(instance, job_name, specs),
            )
        }
        latest = latest_run_id(instance, job_name)
        try:
            for alert in failed_call_alerts(log_db.get_engine(), now.astimezone(dt.UTC), settings, specs, latest):
                current[alert.key] = alert
        except sa.exc.SQLAlchemyError as exc:
            # Unknown is not cleared: keep what was announced until SchedulerLog can be read again.
            context.log.error(f"alerts: cannot read SchedulerLog on {log_db.describe()}: {describe_db_error(exc)}")
            current.update({k: a for k, a in previous.active.items() if a.condition == FAILED_CALLS})

        following = AlertState(dict(previous.active))
        changes = 0
        for key, alert in current.items():
            if key in previous.active:
                following.active[key] = alert
            elif _announce(context, alert_webhook, alert.message(STARTED, settings)):
                following.active[key] = alert
                changes += 1
        for key, alert in previous.active.items():
            if key in current:
                continue
            clearing_run = alert.run_id if alert.condition == RUN_TOO_LONG else latest
            if _announce(context, alert_webhook, alert.message(RESOLVED, settings, clearing_run)):
                del following.active[key]
                changes += 1
        active = ", ".join(sorted(following.active)) or "none"
        return dg.SensorResult(skip_reason=f"{changes} alert(s) sent; active: {active}", cursor=following.to_cursor())

    return tamhr_sync_alerts


def _announce(context: dg.SensorEvaluationContext, webhook: AlertWebhook, message: Mapping[str, Any]) -> bool:
    """Log the alert and post it; False (tried again next evaluation) if the webhook did not take it."""
    started = message["sync_alert"]["state"] == STARTED
    (context.log.error if started else context.log.info)(str(message["text"]).replace("\n", " | "))
    try:
        webhook.post(message)
    except AlertNotDelivered as exc:
        context.log.error(f"alerts: not delivered to {WEBHOOK_URL_ENV_VAR}, will try again: {exc}")
        return False
    return True
