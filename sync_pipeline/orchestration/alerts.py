"""Alerts from a sensor: an entity's check failing run after run, failed API calls, a run too long, a failed run.

The sensor looks at the Dagster instance and at SchedulerLog every minute and keeps the set of
conditions it has announced in its cursor (JSON), so a condition gives one alert when it starts and
one when it clears, never one per evaluation. Every alert goes to the Dagster log and, when
SYNC_ALERT_WEBHOOK_URL is set, to that webhook as `{"text": ...}` (what Slack and Teams incoming
webhooks accept) with the same facts under `sync_alert`. A run in which an entity fell short ends
failed (run_outcome), which gives `run_failed` naming that entity; the check history gives what no
run-failure sensor can: the same entity falling short run after run.

No `from __future__ import annotations` here: Dagster reads the sensor's parameter annotations at runtime.
"""

import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional, Protocol

import dagster as dg
import requests
import sqlalchemy as sa
from pydantic import Field

from sync_pipeline.engine.audit.log_queries import LogQuery, LogRow, call_counts, log_rows
from sync_pipeline.engine.audit.scheduler_log import FAILURE, SUCCESS
from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.state.dead_letters import DeadLetters
from sync_pipeline.engine.state.tracking import TrackingUnavailable
from sync_pipeline.engine.tables import rejected_table
from sync_pipeline.orchestration.sync_assets import CHECK_NAME, DRY_RUN_TAG
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import AlertSettings
from sync_pipeline.specs.model import EntitySpec
from sync_pipeline.specs.sync import SyncSpec

WEBHOOK_URL_ENV_VAR = "SYNC_ALERT_WEBHOOK_URL"
ALERT_WEBHOOK_KEY = "alert_webhook"
"""The resource key of the webhook every sync's alert sensor posts to."""
MAX_ERROR_TEXT = 500
MAX_FAILED_ROWS = 1000
"""Failed SchedulerLog rows read per evaluation to tell whose runs they belong to."""
MAX_NEW_RUNS = 100
"""Materializations (runs) counted per entity and sensor evaluation; more wait for the next evaluation."""

CHECK_FAILING = "check_failing"
FAILED_CALLS = "failed_calls"
RUN_TOO_LONG = "run_too_long"
RUN_FAILED = "run_failed"
DEAD_LETTERED = "dead_lettered"
THROTTLED = "throttled"
RUNS_QUEUED = "runs_queued"
RECORDS_FAILING = "records_failing"
MAX_NAMED_RECORDS = 10
"""Records an alert about refused records names; the count says how many more."""
TOO_MANY_REQUESTS = 429

STARTED = "started"
RESOLVED = "resolved"

_RUN_PROGRESS_EVENTS = {
    dg.DagsterEventType.STEP_START,
    dg.DagsterEventType.STEP_SUCCESS,
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.ASSET_CHECK_EVALUATION,
}
_UNFINISHED_RUN = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
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
class CheckStreak:
    """What the sensor has counted of one entity's check: failed evaluations in a row and where it stopped.

    `materialization_id` is the storage id of the entity's last counted materialization (each real
    sync writes one with its check), `run_id` the run of the last counted evaluation (a passing one
    is the run that clears the alert) and `failure` the alert the newest counted failure gives.
    """

    failures: int = 0
    materialization_id: int | None = None
    run_id: str | None = None
    failure: Alert | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "CheckStreak":
        """Read one entity's streak as `to_json` wrote it."""
        failure = raw.get("failure")
        return cls(**{**raw, "failure": Alert(**failure) if failure else None})

    def to_json(self) -> dict[str, Any]:
        """The streak as plain JSON values."""
        return asdict(self)


@dataclass
class AlertState:
    """The conditions already announced and each entity's check streak, kept in the sensor cursor as JSON.

    A cursor without `streaks` (written before streaks were kept there) is read too: each entity's
    streak is then counted from its newest runs, and an alert still true is not announced again.
    """

    active: dict[str, Alert] = field(default_factory=dict)
    streaks: dict[str, CheckStreak] = field(default_factory=dict)

    @classmethod
    def from_cursor(cls, cursor: str | None) -> "AlertState":
        """Read the cursor; an empty or unreadable one means nothing was announced or counted yet."""
        try:
            raw = json.loads(cursor) if cursor else {}
            return cls(
                {key: Alert(**value) for key, value in raw.get("active", {}).items()},
                {name: CheckStreak.from_json(value) for name, value in raw.get("streaks", {}).items()},
            )
        except (ValueError, TypeError, AttributeError):
            return cls()

    def to_cursor(self) -> str:
        """The cursor to store for the next evaluation."""
        return json.dumps(
            {
                "active": {key: asdict(alert) for key, alert in sorted(self.active.items())},
                "streaks": {name: streak.to_json() for name, streak in sorted(self.streaks.items())},
            }
        )


class ErrorInfo(Protocol):
    """The part of a Dagster error (step or run failure) an alert shows: its message and its cause."""

    @property
    def message(self) -> str: ...

    @property
    def cause(self) -> Optional["ErrorInfo"]: ...


def _error_text(error: ErrorInfo | None, fallback: str) -> str:
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
    incomplete: list[str] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    first_error: str | None = None

    @property
    def in_progress(self) -> list[str]:
        """Entities whose step started and has not finished."""
        return [name for name in self.started if name not in self.finished and name not in self.failed]

    @property
    def to_blame(self) -> list[str]:
        """Entities that did not deliver everything: a failed check, or a failed step whose check did not pass.

        A step that delivered everything and then failed the run (to report the others) is not to blame.
        """
        failed_steps = [name for name in self.failed if name not in self.delivered]
        return list(dict.fromkeys([*self.incomplete, *failed_steps]))

    @property
    def complete(self) -> list[str]:
        """Entities whose step ran and delivered everything, the one that then failed the run included."""
        return [name for name in dict.fromkeys([*self.finished, *self.failed]) if name not in self.to_blame]


def run_progress(instance: dg.DagsterInstance, run_id: str, specs: Sequence[EntitySpec]) -> RunProgress:
    """Read a run's step and check events: which entities started, finished, failed or fell short, the first error."""
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
            if isinstance(evaluation, dg.AssetCheckEvaluation) and evaluation.passed:
                progress.delivered.append(entity)
            elif isinstance(evaluation, dg.AssetCheckEvaluation):
                progress.incomplete.append(entity)
                problem = evaluation.description or "check failed"
                progress.first_error = progress.first_error or f"{entity}: {problem}"
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE:
            error_info = getattr(event.event_specific_data, "error", None)
            run_error = _error_text(error_info, record.event_log_entry.message)
    progress.first_error = progress.first_error or run_error
    return progress


def run_check_evaluation(instance: dg.DagsterInstance, run_id: str, spec: EntitySpec) -> dg.AssetCheckEvaluation | None:
    """The entity's check evaluation in that run; None when the run has none (yet)."""
    asset_key = dg.AssetKey(spec.asset_name)
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event else None
        if (
            isinstance(evaluation, dg.AssetCheckEvaluation)
            and evaluation.asset_key == asset_key
            and evaluation.check_name == CHECK_NAME
        ):
            return evaluation
    return None


def is_dry_run(evaluation: dg.AssetCheckEvaluation) -> bool:
    """True for an evaluation a dry run wrote (before dry runs stopped writing them): it sent nothing."""
    flag = evaluation.metadata.get("dry_run")
    return flag is not None and flag.value is True


def check_failure_alert(spec: EntitySpec, run_id: str, evaluation: dg.AssetCheckEvaluation, failures: int) -> Alert:
    """The alert of an entity whose check has now failed `failures` times in a row, from its newest failure."""
    metadata = {name: entry.value for name, entry in evaluation.metadata.items()}
    figures = {
        name: value for name, value in metadata.items() if isinstance(value, int) and not isinstance(value, bool)
    }
    error = metadata.get("first_error") or evaluation.description
    return Alert(
        key=f"{CHECK_FAILING}:{spec.asset_name}",
        condition=CHECK_FAILING,
        entity=spec.name,
        summary=f"{spec.name}: check {CHECK_NAME} failed in {failures} consecutive runs",
        counts={"consecutive_failed_runs": failures, **figures},
        first_error=str(error)[:MAX_ERROR_TEXT] if error else None,
        run_id=run_id,
    )


def count_check(
    instance: dg.DagsterInstance, spec: EntitySpec, streak: CheckStreak | None, consecutive: int
) -> CheckStreak:
    """The entity's streak after the runs that materialized it since the last count: +1 per failed check, 0 on a pass.

    Every real sync materializes its entity together with the check, so the materializations since
    the streak's `materialization_id` are exactly the evaluations not counted yet, however many runs
    came between two sensor evaluations. Without a streak (an empty or older cursor) the newest
    `consecutive` materializations are counted: enough to tell whether a streak is on now.
    """
    asset_key = dg.AssetKey(spec.asset_name)
    if streak is None:
        records: Sequence[dg.EventLogRecord] = instance.fetch_materializations(asset_key, limit=consecutive).records[
            ::-1
        ]
        streak = CheckStreak()
    else:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, after_storage_id=streak.materialization_id),
            limit=MAX_NEW_RUNS,
            ascending=True,
        ).records
    for record in records:
        evaluation = run_check_evaluation(instance, record.run_id, spec)
        if evaluation is None and _unfinished(instance, record.run_id):
            break  # materialized, check not written yet: count it next time
        if evaluation is None or is_dry_run(evaluation):
            streak = replace(streak, materialization_id=record.storage_id)
        elif evaluation.passed:
            streak = CheckStreak(0, record.storage_id, record.run_id)
        else:
            failures = streak.failures + 1
            alert = check_failure_alert(spec, record.run_id, evaluation, failures)
            streak = CheckStreak(failures, record.storage_id, record.run_id, alert)
    return streak


def _unfinished(instance: dg.DagsterInstance, run_id: str) -> bool:
    record = instance.get_run_record_by_id(run_id)
    return record is not None and record.dagster_run.status in _UNFINISHED_RUN


def failing_check_alerts(streaks: Mapping[str, CheckStreak], consecutive: int) -> list[Alert]:
    """(a) Entities whose `all_records_delivered` failed in each of their last `consecutive` evaluations."""
    return [
        streak.failure for streak in streaks.values() if streak.failure is not None and streak.failures >= consecutive
    ]


def run_statuses(instance: dg.DagsterInstance, run_ids: Iterable[str]) -> dict[str, dg.RunRecord]:
    """The run records of these runs, by run id; a deleted run is missing."""
    wanted = sorted(set(run_ids))
    if not wanted:
        return {}
    return {record.dagster_run.run_id: record for record in instance.get_run_records(dg.RunsFilter(run_ids=wanted))}


def failed_call_alerts(
    instance: dg.DagsterInstance,
    log_engine: sa.Engine,
    now: dt.datetime,
    settings: AlertSettings,
    sync: SyncSpec,
    names: Sequence[str],
) -> list[Alert]:
    """(b) More than `failed_call_ratio` of the API calls in the last window failed (SchedulerLog).

    Failed calls of a run of the job that failed, or is still going, are that run's to report (its
    `run_failed` alert): only when some failed call belongs to another run (a re-run, a run that
    succeeded after retries, a row without RunId) is this a separate alert, linking that call's run.
    """
    since = now - dt.timedelta(minutes=settings.failed_call_window_minutes)
    counts = call_counts(log_engine, since=since, entities=names)
    calls = sum(entity.calls for entity in counts.values())
    failed = sum(entity.failed for entity in counts.values())
    if not calls or failed / calls <= settings.failed_call_ratio:
        return []
    failures = log_rows(
        log_engine, LogQuery(entities=names, statuses=[FAILURE], since=since, limit=MAX_FAILED_ROWS), newest_first=False
    )
    runs = run_statuses(instance, (row.run_id for row in failures if row.run_id))
    first = next((row for row in failures if not _reported_by_its_run(row, runs, sync.job_name)), None)
    if first is None:
        return []
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
            first_error=f"{first.entity}: {first.exception_message}"[:MAX_ERROR_TEXT],
            run_id=first.run_id,
        )
    ]


def _reported_by_its_run(row: LogRow, runs: Mapping[str, dg.RunRecord], job_name: str) -> bool:
    """True when the failed call's run is a run of the job that failed or has not finished yet."""
    record = runs.get(row.run_id or "")
    if record is None or record.dagster_run.job_name != job_name:
        return False
    return record.dagster_run.status == dg.DagsterRunStatus.FAILURE or record.dagster_run.status in _UNFINISHED_RUN


def entity_types(sync: SyncSpec, customers: Sequence[str] = ()) -> list[str]:
    """The sync's entities as the Log database names them: each one's EntityType, or, for a sync run per
    customer, `<EntityType>/<customer>` for each of its customers."""
    names = [sync.entity_type(spec) for spec in sync.entities]
    return [f"{name}/{customer}" for name in names for customer in customers] if customers else names


def dead_letter_alerts(log_engine: sa.Engine, names: Sequence[str]) -> list[Alert]:
    """(e) A customer's run (or an entity's) that failed after its last retry, as TB_R_SYNC_DEAD_LETTER keeps it."""
    wanted = set(names)
    return [
        Alert(
            key=f"{DEAD_LETTERED}:{letter.entity_type}",
            condition=DEAD_LETTERED,
            entity=letter.entity_type,
            summary=f"{letter.entity_type} failed after {letter.attempts} attempt(s) and is dead-lettered",
            counts={"attempts": letter.attempts},
            first_error=letter.reason[:MAX_ERROR_TEXT],
            run_id=letter.run_id,
        )
        for letter in DeadLetters(log_engine).listed()
        if letter.entity_type in wanted
    ]


def failing_record_alerts(log_engine: sa.Engine, names: Sequence[str], threshold: int) -> list[Alert]:
    """(f) Records of per-record entities refused `threshold` runs or more and still not through
    (TB_R_SYNC_REJECTED), one alert per entity naming them with their latest reasons; it clears once each
    went through."""
    rejected = rejected_table.c
    query = (
        sa.select(
            rejected.EntityType, rejected.EntityId, rejected.RejectionCount, rejected.Reason, rejected.ResponseExcerpt
        )
        .where(rejected.EntityType.in_(list(names)), rejected.RejectionCount >= threshold)
        .order_by(rejected.EntityType, rejected.LastRejectedOn.desc(), rejected.EntityId)
        .limit(MAX_FAILED_ROWS)
    )
    try:
        with log_engine.connect() as conn:
            rows = conn.execute(query).all()
    except sa.exc.SQLAlchemyError as exc:
        raise TrackingUnavailable(f"{rejected_table.name}: {describe_db_error(exc)}") from exc
    by_entity: dict[str, list[Any]] = {}
    for row in rows:
        by_entity.setdefault(row.EntityType, []).append(row)
    alerts = []
    for entity, records in by_entity.items():
        named = ", ".join(f"{r.EntityId} ({r.RejectionCount}x)" for r in records[:MAX_NAMED_RECORDS])
        more = f" and {len(records) - MAX_NAMED_RECORDS} more" if len(records) > MAX_NAMED_RECORDS else ""
        alerts.append(
            Alert(
                key=f"{RECORDS_FAILING}:{entity}",
                condition=RECORDS_FAILING,
                entity=entity,
                summary=f"{len(records)} record(s) of {entity} refused {threshold} runs or more: {named}{more}",
                counts={"records": len(records), "most_refusals": max(r.RejectionCount for r in records)},
                first_error=_refusal_text(records[0])[:MAX_ERROR_TEXT],
            )
        )
    return alerts


def _refusal_text(row: Any) -> str:
    """A refused record as an alert quotes it: its id, the reason, and the receiver's answer (redacted when kept)."""
    answer = f": {row.ResponseExcerpt}" if row.ResponseExcerpt else ""
    return f"{row.EntityId}: {row.Reason}{answer}"


def throttled_alerts(
    log_engine: sa.Engine, now: dt.datetime, settings: AlertSettings, names: Sequence[str]
) -> list[Alert]:
    """(f) More than `max_throttled_calls` calls were answered 429 in the last window: the API's rate
    limit is being hit often (each was waited out, but the budget is too small for the sync)."""
    since = now - dt.timedelta(minutes=settings.failed_call_window_minutes)
    query = LogQuery(entities=names, statuses=[FAILURE], since=since, limit=MAX_FAILED_ROWS)
    throttled = [row for row in log_rows(log_engine, query) if row.http_response_code == TOO_MANY_REQUESTS]
    if len(throttled) <= settings.max_throttled_calls:
        return []
    window = settings.failed_call_window_minutes
    return [
        Alert(
            key=THROTTLED,
            condition=THROTTLED,
            entity=", ".join(sorted({row.entity for row in throttled})),
            summary=(
                f"{len(throttled)} calls were rate limited (429) in the last {window} minutes "
                f"(alert above {settings.max_throttled_calls})"
            ),
            counts={"throttled_calls": len(throttled), "limit": settings.max_throttled_calls},
            first_error=f"{throttled[0].entity}: {throttled[0].exception_message}"[:MAX_ERROR_TEXT],
            run_id=throttled[0].run_id,
        )
    ]


def queued_runs_alerts(instance: dg.DagsterInstance, job_name: str, limit: int) -> list[Alert]:
    """(g) More than `max_queued_runs` runs of the job wait in the run queue."""
    queued = instance.get_runs_count(dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.QUEUED]))
    if queued <= limit:
        return []
    summary = f"{queued} runs of {job_name} are queued (alert above {limit})"
    return [Alert(RUNS_QUEUED, RUNS_QUEUED, "-", summary, {"queued_runs": queued, "limit": limit})]


def newest_successful_call_run(log_engine: sa.Engine, since: dt.datetime, names: Sequence[str]) -> str | None:
    """The run of the newest successful call since `since`: the run that cleared a failed-call alert."""
    query = LogQuery(entities=names, statuses=[SUCCESS], since=since, limit=1)
    rows = log_rows(log_engine, query)
    return rows[0].run_id if rows else None


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


def latest_finished_run(instance: dg.DagsterInstance, job_name: str) -> dg.DagsterRun | None:
    """The job's newest run that succeeded or failed, dry runs left out (they send nothing)."""
    finished = instance.get_run_records(
        dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]),
        limit=MAX_NEW_RUNS,
    )
    return next((r.dagster_run for r in finished if r.dagster_run.tags.get(DRY_RUN_TAG) != "true"), None)


def failed_run_alerts(
    instance: dg.DagsterInstance, latest: dg.DagsterRun | None, job_name: str, specs: Sequence[EntitySpec]
) -> list[Alert]:
    """(d) The job's latest finished run failed; clears when a later run succeeds.

    It names the entities that fell short or whose step failed, not the last entity whose step only
    raised to fail a run in which others fell short (it delivered everything, its check passed).
    """
    if latest is None or latest.status != dg.DagsterRunStatus.FAILURE:
        return []
    progress = run_progress(instance, latest.run_id, specs)
    return [
        Alert(
            key=f"{RUN_FAILED}:{job_name}",
            condition=RUN_FAILED,
            entity=", ".join(progress.to_blame) or "- (failed before any entity ran)",
            summary=f"{job_name} run failed",
            counts={"entities_complete": len(progress.complete), "entities_incomplete": len(progress.to_blame)},
            first_error=progress.first_error,
            run_id=latest.run_id,
        )
    ]


def utc_now() -> dt.datetime:
    """The sensor's clock: aware UTC."""
    return dt.datetime.now(dt.UTC)


def build_alert_sensor(
    settings: AlertSettings,
    sync: SyncSpec,
    customers_partitions: str | None = None,
    clock: Callable[[], dt.datetime] = utc_now,
    minimum_interval_seconds: int = 60,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> dg.SensorDefinition:
    """The sync's alert sensor; needs the sync's `log_db` (SchedulerLog) and the `alert_webhook` resources.
    For a sync run per customer, `customers_partitions` names its partitions: each customer's Log rows count."""
    job_name, specs, log_db_key = sync.job_name, sync.entities, sync.resource_key("log_db")

    @dg.sensor(
        name=sync.sensor_name,
        required_resource_keys={log_db_key, ALERT_WEBHOOK_KEY},
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Alerts (Dagster log and {WEBHOOK_URL_ENV_VAR}) when a check fails "
            f"{settings.consecutive_failures} runs in a row, more than {settings.failed_call_ratio:.0%} of API calls "
            f"fail in {settings.failed_call_window_minutes} minutes, a run passes {settings.max_run_minutes} minutes, "
            f"a run fails, more than {settings.max_throttled_calls} calls are rate limited or more than "
            f"{settings.max_queued_runs} runs are queued, a customer is dead-lettered, or a record sent on its own "
            f"call is refused {settings.record_failures} runs or more; and again when each clears."
        ),
    )
    def sync_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        log_db: SyncDatabase = getattr(context.resources, log_db_key)
        alert_webhook: AlertWebhook = getattr(context.resources, ALERT_WEBHOOK_KEY)
        now = clock()
        instance = context.instance
        previous = AlertState.from_cursor(context.cursor)
        streaks = {
            spec.asset_name: count_check(
                instance, spec, previous.streaks.get(spec.asset_name), settings.consecutive_failures
            )
            for spec in specs
        }
        latest = latest_finished_run(instance, job_name)
        current = {
            alert.key: alert
            for alert in (
                *failing_check_alerts(streaks, settings.consecutive_failures),
                *long_run_alerts(instance, job_name, now, settings.max_run_minutes, specs),
                *failed_run_alerts(instance, latest, job_name, specs),
                *queued_runs_alerts(instance, job_name, settings.max_queued_runs),
            )
        }
        since = now.astimezone(dt.UTC) - dt.timedelta(minutes=settings.failed_call_window_minutes)
        call_run: str | None = None
        customers = instance.get_dynamic_partitions(customers_partitions) if customers_partitions else []
        names = entity_types(sync, customers)
        try:
            log_engine = log_db.get_engine()
            for alert in failed_call_alerts(instance, log_engine, now.astimezone(dt.UTC), settings, sync, names):
                current[alert.key] = alert
            if FAILED_CALLS in previous.active and FAILED_CALLS not in current:
                call_run = newest_successful_call_run(log_engine, since, names)
            current.update(
                {alert.key: alert for alert in throttled_alerts(log_engine, now.astimezone(dt.UTC), settings, names)}
            )
            if customers_partitions:
                current.update({alert.key: alert for alert in dead_letter_alerts(log_engine, names)})
            per_record = [sync.entity_type(spec) for spec in specs if spec.record_sink is not None]
            if per_record:  # their refusals leave TB_R_SYNC_REJECTED once they go through: the alert can clear
                failing = failing_record_alerts(log_engine, per_record, settings.record_failures)
                current.update({alert.key: alert for alert in failing})
        except (sa.exc.SQLAlchemyError, TrackingUnavailable) as exc:
            # Unknown is not cleared: keep what was announced until the Log database can be read again.
            what = str(exc) if isinstance(exc, TrackingUnavailable) else f"SchedulerLog: {describe_db_error(exc)}"
            context.log.error(f"alerts: cannot read {what} (on {log_db.describe()})")
            held = (FAILED_CALLS, DEAD_LETTERED, THROTTLED, RECORDS_FAILING)
            current.update({k: a for k, a in previous.active.items() if a.condition in held})

        def clearing_run(alert: Alert) -> str | None:
            """The run that cleared the condition: the passing check's, the succeeding run, the long run itself."""
            if alert.condition == CHECK_FAILING:
                return streaks[alert.key.removeprefix(f"{CHECK_FAILING}:")].run_id
            if alert.condition == RUN_FAILED:
                return latest.run_id if latest is not None else None
            if alert.condition == FAILED_CALLS:
                return call_run
            return alert.run_id

        following = AlertState(dict(previous.active), streaks)
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
            if _announce(context, alert_webhook, alert.message(RESOLVED, settings, clearing_run(alert))):
                del following.active[key]
                changes += 1
        active = ", ".join(sorted(following.active)) or "none"
        return dg.SensorResult(skip_reason=f"{changes} alert(s) sent; active: {active}", cursor=following.to_cursor())

    return sync_alerts


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
