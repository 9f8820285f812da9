"""The alert sensor, evaluated on a real Dagster instance after real runs, posting to a real webhook on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_pipeline.demo.receiver import BackgroundServer
from sync_pipeline.engine.audit.log_queries import LogQuery, log_rows
from sync_pipeline.engine.audit.scheduler_log import ApiCall, SchedulerLogWriter
from sync_pipeline.engine.http.api import ApiResponse
from sync_pipeline.engine.tables import scheduler_log_table
from sync_pipeline.orchestration.alerts import (
    WEBHOOK_URL_ENV_VAR,
    AlertSettings,
    AlertWebhook,
    build_alert_sensor,
    build_alert_webhook,
    queued_runs_alerts,
)
from sync_pipeline.orchestration.dry_run_job import build_dry_run_job
from sync_pipeline.orchestration.schedules import build_job_and_schedule
from sync_pipeline.orchestration.sync_assets import DRY_RUN_TAG, build_entity_assets
from sync_pipeline.resources.database import SyncDatabase, create_sync_engine
from sync_pipeline.settings import Settings
from sync_pipeline.specs.tamhr import TAMHR_ENTITIES, TAMHR_SYNC

from .conftest import SyncDatabases
from .fakes import RecordingApiClient, ScriptedAnswer

SECRET_PATH = "/services/T0000/B0000/s3cr3t-webhook-token"
UI = "https://dagster.example.test"


class WebhookReceiver(BackgroundServer):
    """An incoming webhook on 127.0.0.1, like Slack's: keeps each JSON body POSTed to its secret path."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.refuse_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != SECRET_PATH or self.headers.get("Content-Type") != "application/json":
                    self.send_response(HTTPStatus.NOT_FOUND)
                elif receiver.refuse_next:
                    receiver.refuse_next -= 1
                    self.send_response(HTTPStatus.INTERNAL_SERVER_ERROR)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(HTTPStatus.OK)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        super().__init__(Handler, name="webhook")

    @property
    def url(self) -> str:
        """The webhook's URL, secret token included."""
        return self.address(SECRET_PATH)


class ListHandler(logging.Handler):
    """Keeps the messages of the sensor's Dagster log."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class Clock:
    """The sensor's clock, real time plus an offset the test moves forward."""

    offset: dt.timedelta = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


@dataclass
class AlertSensor:
    """The sensor as the daemon drives it: each tick gets the cursor the previous tick left."""

    instance: dg.DagsterInstance
    log_url: str
    webhook: AlertWebhook
    receiver: WebhookReceiver
    settings: AlertSettings = field(default_factory=lambda: AlertSettings(ui_base_url=UI))
    clock: Clock = field(default_factory=Clock)
    cursor: str | None = None
    log: ListHandler = field(default_factory=ListHandler)

    def tick(self) -> list[dict[str, Any]]:
        """Evaluate once; return the `sync_alert` part of each webhook body this tick delivered."""
        sensor = build_alert_sensor(self.settings, TAMHR_SYNC, clock=self.clock)
        delivered_before = len(self.receiver.bodies)
        resources = {"log_db": SyncDatabase(url=self.log_url), "alert_webhook": self.webhook}
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=resources) as context:
            context.log.addHandler(self.log)
            result = sensor.evaluate_tick(context)
        self.cursor = result.cursor
        return [body["sync_alert"] for body in self.receiver.bodies[delivered_before:]]


def outline(alerts: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(state, condition, entity) of each alert, the part most assertions are about."""
    return [(alert["state"], alert["condition"], alert["entity"]) for alert in alerts]


def about(condition: str, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts of one condition, for tests about that condition alone (an incomplete run also fails)."""
    return [alert for alert in alerts if alert["condition"] == condition]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as webhook:
        yield webhook


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real, persistent (temporary directory, SQLite) Dagster instance."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def seeded(databases: SyncDatabases) -> SyncDatabases:
    for spec in TAMHR_ENTITIES:
        databases.insert_rows(spec.name, 5)
    return databases


@pytest.fixture
def alert_sensor(instance: dg.DagsterInstance, seeded: SyncDatabases, receiver: WebhookReceiver) -> AlertSensor:
    return AlertSensor(instance, seeded.urls["log_db"], AlertWebhook(url=receiver.url), receiver)


class DatabaseCheckedAtRunStart(SyncDatabase):
    """A Log database resource that creates its engine when the run starts: with a bad URL the run
    fails before any entity runs, which is how these tests make a run fail (SyncDatabase itself
    stops only the entities on a database with a bad URL)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Fail the run's resource initialisation on a URL that cannot make an engine."""
        create_sync_engine(self.url).dispose()


def run_sync_job(
    instance: dg.DagsterInstance,
    databases: SyncDatabases,
    settings: Settings,
    api: RecordingApiClient,
    log_url: str | None = None,
    dry_run: bool = False,
) -> dg.ExecuteInProcessResult:
    """A real run of the sync job (or of the dry-run job) on `instance`, against the test databases and a fake API."""
    resources: dict[str, Any] = {key: SyncDatabase(url=url) for key, url in databases.urls.items()}
    if log_url:
        resources["log_db"] = DatabaseCheckedAtRunStart(url=log_url)
    defs = dg.Definitions.merge(
        build_job_and_schedule(TAMHR_SYNC, settings),
        dg.Definitions(
            assets=build_entity_assets(TAMHR_SYNC, settings),
            jobs=[build_dry_run_job(TAMHR_SYNC, settings)],
            resources={**resources, "sync_api": api},
        ),
    )
    job = defs.resolve_job_def(TAMHR_SYNC.dry_run_job_name if dry_run else TAMHR_SYNC.job_name)
    return job.execute_in_process(instance=instance, raise_on_error=False)


def users_unreachable(settings: Settings) -> RecordingApiClient:
    """An API whose Users endpoint refuses connections: the Users check fails, every entity runs, the run fails."""
    return RecordingApiClient(unreachable_urls=[settings.endpoint_url("Users")])


def test_an_incomplete_night_alerts_run_failed_the_third_in_a_row_check_failing_and_a_complete_run_resolves_both(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    first = run_sync_job(instance, seeded, settings, users_unreachable(settings))
    assert not first.success
    (run_failed,) = alert_sensor.tick()  # Users' failed calls are this run's to report: no failed-call alert

    assert outline([run_failed]) == [("started", "run_failed", "Users")]  # not EventsCalendar, which failed the run
    assert run_failed["counts"] == {"entities_complete": 4, "entities_incomplete": 1}
    assert run_failed["first_error"].startswith("Users: endpoint unreachable")
    assert run_failed["run_url"] == f"{UI}/runs/{first.run_id}"
    assert alert_sensor.tick() == []

    run_sync_job(instance, seeded, settings, users_unreachable(settings))
    assert alert_sensor.tick() == []  # run_failed is already announced

    third = run_sync_job(instance, seeded, settings, users_unreachable(settings))
    (check_failing,) = alert_sensor.tick()

    assert outline([check_failing]) == [("started", "check_failing", "Users")]
    assert check_failing["counts"]["consecutive_failed_runs"] == 3
    assert check_failing["counts"]["failed"] == 3  # the first batch of 3; an unreachable endpoint stops the entity
    assert "unreachable" in check_failing["first_error"]
    assert check_failing["run_url"] == f"{UI}/runs/{third.run_id}"
    assert alert_sensor.tick() == []

    run_sync_job(instance, seeded, settings, users_unreachable(settings))
    assert alert_sensor.tick() == []

    passing = run_sync_job(instance, seeded, settings, RecordingApiClient())
    assert passing.success
    resolved = alert_sensor.tick()

    assert sorted(outline(resolved)) == [("resolved", "check_failing", "Users"), ("resolved", "run_failed", "Users")]
    assert {alert["run_url"] for alert in resolved} == {f"{UI}/runs/{passing.run_id}"}
    assert alert_sensor.tick() == []


def test_a_passing_run_between_failures_breaks_the_streak(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    alert_sensor.settings = AlertSettings(failed_call_ratio=0.99, consecutive_failures=2)
    run_sync_job(instance, seeded, settings, users_unreachable(settings))
    run_sync_job(instance, seeded, settings, RecordingApiClient())
    seeded.insert_rows("Users", 1, start=100)  # a new record, so the next runs have something to fail on
    run_sync_job(instance, seeded, settings, users_unreachable(settings))

    assert about("check_failing", alert_sensor.tick()) == []

    run_sync_job(instance, seeded, settings, users_unreachable(settings))

    assert outline(about("check_failing", alert_sensor.tick())) == [("started", "check_failing", "Users")]


def write_calls(databases: SyncDatabases, settings: Settings, when: dt.datetime, ok: int, failed: int) -> None:
    """SchedulerLog rows for `ok` good and `failed` failed Users calls at `when`, as the engine writes them."""
    writer = SchedulerLogWriter(settings.scheduler_log.columns())
    url = settings.endpoint_url("Users")
    calls = [ApiCall(url, 3, 200, 5)] * ok + [ApiCall(url, 3, 503, 5, f"HTTP 503: busy {n}") for n in range(failed)]
    naive = when.astimezone(dt.UTC).replace(tzinfo=None)
    with databases.log.begin() as conn:
        for number, call in enumerate(calls):
            conn.execute(
                sa.insert(scheduler_log_table), writer.row("Users", call, naive + dt.timedelta(seconds=number))
            )


def test_more_than_five_percent_failed_calls_in_the_last_hour_alerts_once_and_resolves_as_the_hour_moves_on(
    alert_sensor: AlertSensor, seeded: SyncDatabases, settings: Settings
) -> None:
    now = dt.datetime.now(dt.UTC)
    write_calls(seeded, settings, now - dt.timedelta(hours=3), ok=0, failed=10)  # outside the window
    write_calls(seeded, settings, now - dt.timedelta(minutes=50), ok=19, failed=1)  # exactly 5%: not more

    assert alert_sensor.tick() == []

    write_calls(seeded, settings, now - dt.timedelta(minutes=40), ok=0, failed=1)
    (alert,) = alert_sensor.tick()

    assert outline([alert]) == [("started", "failed_calls", "Users")]
    assert alert["counts"] == {"calls": 21, "failed_calls": 2}
    assert alert["first_error"] == "Users: HTTP 503: busy 0"
    assert "2 of 21 API calls (9.5%) failed in the last 60 minutes" in alert["summary"]
    assert alert_sensor.tick() == []

    alert_sensor.clock.offset = dt.timedelta(minutes=15)  # the 50-minute-old calls leave the window
    assert alert_sensor.tick() == []  # 1 of 1 still failed
    alert_sensor.clock.offset = dt.timedelta(minutes=25)
    (resolved,) = alert_sensor.tick()

    assert outline([resolved]) == [("resolved", "failed_calls", "Users")]
    assert alert_sensor.tick() == []


class GatedApiClient(RecordingApiClient):
    """A fake API that holds every call until the test opens the gate: a run that takes its time."""

    def post_batch(self, *args: Any, **kwargs: Any) -> ApiResponse:
        CALL_ARRIVED.set()
        GATE.wait(timeout=60)
        return super().post_batch(*args, **kwargs)


CALL_ARRIVED = threading.Event()
GATE = threading.Event()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    CALL_ARRIVED.clear()
    GATE.clear()
    yield GATE
    GATE.set()


def test_a_run_longer_than_the_limit_alerts_once_and_resolves_when_it_finishes(
    alert_sensor: AlertSensor,
    instance: dg.DagsterInstance,
    seeded: SyncDatabases,
    settings: Settings,
    gate: threading.Event,
) -> None:
    results: list[dg.ExecuteInProcessResult] = []
    run = threading.Thread(target=lambda: results.append(run_sync_job(instance, seeded, settings, GatedApiClient())))
    run.start()
    assert CALL_ARRIVED.wait(timeout=60)
    (record,) = instance.get_run_records(dg.RunsFilter(job_name=TAMHR_SYNC.job_name))
    assert record.dagster_run.status == dg.DagsterRunStatus.STARTED

    assert alert_sensor.tick() == []  # running for seconds, not 30 minutes

    alert_sensor.clock.offset = dt.timedelta(minutes=31)
    (alert,) = alert_sensor.tick()

    assert outline([alert]) == [("started", "run_too_long", "Users")]
    assert alert["counts"]["minutes_running"] == 31 and alert["counts"]["limit_minutes"] == 30
    assert alert["run_url"] == f"{UI}/runs/{record.dagster_run.run_id}"
    assert alert_sensor.tick() == []

    gate.set()
    run.join(timeout=120)
    assert results[0].success
    (resolved,) = alert_sensor.tick()

    assert outline([resolved]) == [("resolved", "run_too_long", "Users")]
    assert resolved["run_url"] == f"{UI}/runs/{record.dagster_run.run_id}"


def test_a_failed_run_alerts_once_and_resolves_when_a_later_run_succeeds(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    failed = run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log")
    assert not failed.success
    (alert,) = alert_sensor.tick()

    assert outline([alert]) == [("started", "run_failed", "- (failed before any entity ran)")]
    assert "Can't load plugin: sqlalchemy.dialects:nosuchdialect" in alert["first_error"]
    assert alert["run_url"] == f"{UI}/runs/{failed.run_id}"

    run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log")
    assert alert_sensor.tick() == []

    succeeded = run_sync_job(instance, seeded, settings, RecordingApiClient())
    (resolved,) = alert_sensor.tick()

    assert outline([resolved]) == [("resolved", "run_failed", "- (failed before any entity ran)")]
    assert resolved["run_url"] == f"{UI}/runs/{succeeded.run_id}"


class ExplodingApiClient(RecordingApiClient):
    """A fake API client with a bug: it raises on ActualOrg, so that step fails and the run with it."""

    def post_batch(self, url: str, *args: Any, **kwargs: Any) -> ApiResponse:
        if url.endswith("/actual-organization-structures"):
            raise RuntimeError("client bug: unexpected answer shape")
        return super().post_batch(url, *args, **kwargs)


def test_a_run_failed_in_a_step_names_that_entity_and_its_error(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    failed = run_sync_job(instance, seeded, settings, ExplodingApiClient())
    assert not failed.success

    (alert,) = alert_sensor.tick()

    assert outline([alert]) == [("started", "run_failed", "ActualOrg")]
    assert alert["counts"] == {"entities_complete": 1, "entities_incomplete": 1}
    assert alert["first_error"] == "ActualOrg: RuntimeError: client bug: unexpected answer shape"


def test_the_webhook_gets_slack_shaped_json_and_the_dagster_log_gets_the_same_text(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    failed = run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log")

    alert_sensor.tick()

    (body,) = alert_sensor.receiver.bodies
    assert set(body) == {"text", "sync_alert"}
    assert body["text"].splitlines() == [
        f"[sync_pipeline ALERT] {TAMHR_SYNC.job_name} run failed",
        "Entity: - (failed before any entity ran)",
        "Counts: entities_complete=0, entities_incomplete=0",
        "First error: sqlalchemy.exc.NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:nosuchdialect",
        f"Run: {UI}/runs/{failed.run_id}",
    ]
    assert body["text"].replace("\n", " | ") in alert_sensor.log.messages


def test_an_alert_the_webhook_refused_is_sent_again_next_tick_and_the_url_is_never_logged(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log")
    alert_sensor.receiver.refuse_next = 1

    assert alert_sensor.tick() == []
    assert outline(alert_sensor.tick()) == [("started", "run_failed", "- (failed before any entity ran)")]
    assert alert_sensor.tick() == []

    assert any("the webhook answered HTTP 500" in message for message in alert_sensor.log.messages)
    assert not any("s3cr3t-webhook-token" in message for message in alert_sensor.log.messages)


def test_an_unreachable_webhook_is_reported_without_its_url(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log")
    alert_sensor.webhook = AlertWebhook(url=f"http://127.0.0.1:1{SECRET_PATH}", timeout_seconds=2)

    alert_sensor.tick()

    assert any("ConnectionError posting to the webhook" in message for message in alert_sensor.log.messages)
    assert not any("s3cr3t-webhook-token" in message for message in alert_sensor.log.messages)
    assert "run_failed" not in (alert_sensor.cursor or "")


def test_without_a_webhook_url_alerts_go_to_the_dagster_log_only(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log")
    alert_sensor.webhook = AlertWebhook()

    alert_sensor.tick()
    alert_sensor.tick()

    alerts = [message for message in alert_sensor.log.messages if message.startswith("[sync_pipeline ALERT]")]
    assert alerts == [alerts[0]] and f"{TAMHR_SYNC.job_name} run failed" in alerts[0]
    assert alert_sensor.receiver.bodies == []


def test_an_unreadable_scheduler_log_does_not_resolve_a_failed_call_alert(
    alert_sensor: AlertSensor, seeded: SyncDatabases, settings: Settings
) -> None:
    write_calls(seeded, settings, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), ok=1, failed=1)
    assert outline(alert_sensor.tick()) == [("started", "failed_calls", "Users")]
    with seeded.log.begin() as conn:
        conn.execute(sa.text('ALTER TABLE "SchedulerLog" RENAME TO "SchedulerLogMoved"'))

    assert alert_sensor.tick() == []

    assert any("cannot read SchedulerLog" in message for message in alert_sensor.log.messages)
    assert "failed_calls" in (alert_sensor.cursor or "")


def test_the_webhook_url_comes_only_from_its_environment_variable() -> None:
    configured = build_alert_webhook({WEBHOOK_URL_ENV_VAR: "https://hooks.example.test/secret"})
    unset = build_alert_webhook({})

    assert configured.url == dg.EnvVar(WEBHOOK_URL_ENV_VAR)
    assert unset.url is None and not unset.configured


def test_the_sensor_loads_with_the_code_locations_resources() -> None:
    sensor = build_alert_sensor(AlertSettings(), TAMHR_SYNC)
    defs = dg.Definitions(
        sensors=[sensor],
        resources={"log_db": SyncDatabase(url=dg.EnvVar("SYNC_LOG_DB_URL")), "alert_webhook": build_alert_webhook({})},
    )

    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_sensor_def(TAMHR_SYNC.sensor_name).required_resource_keys == {"log_db", "alert_webhook"}
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_alert_settings_have_the_documented_defaults() -> None:
    assert AlertSettings().model_dump() == {
        "consecutive_failures": 3,
        "failed_call_ratio": 0.05,
        "failed_call_window_minutes": 60,
        "max_run_minutes": 30,
        "max_throttled_calls": 100,
        "max_queued_runs": 1000,
        "record_failures": 3,
        "ui_base_url": "http://127.0.0.1:3000",
    }
    assert AlertSettings(ui_base_url="https://dagster.corp/").run_url("abc") == "https://dagster.corp/runs/abc"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"consecutive_failures": 0}, "greater than or equal to 1"),
        ({"failed_call_ratio": 5}, "less than 1"),
        ({"max_run_minutes": "30"}, "valid integer"),
        ({"ui_base_url": "ftp://dagster"}, "must be an http:// or https:// URL"),
        ({"webhook_url": "https://hooks.example.test"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_alert_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlertSettings.model_validate(values)


def test_every_scheduler_log_row_names_the_run_that_made_the_call(
    instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    run = run_sync_job(instance, seeded, settings, users_unreachable(settings))

    rows = log_rows(seeded.log, LogQuery())

    assert rows and {row.run_id for row in rows} == {run.run_id}


def test_a_failed_call_alert_links_the_run_of_the_failures_not_the_newest_run(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    busy_once = ScriptedAnswer(url=settings.endpoint_url("Users"), call_number=1, status=503)
    retried = run_sync_job(instance, seeded, settings, RecordingApiClient(scripted_answers=[busy_once]))
    assert retried.success  # the retry got the batch through; the failed call stays in SchedulerLog
    run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log")  # newest, no calls

    alerts = {alert["condition"]: alert for alert in alert_sensor.tick()}

    assert sorted(alerts) == ["failed_calls", "run_failed"]
    assert alerts["failed_calls"]["run_url"] == f"{UI}/runs/{retried.run_id}"


def test_one_failed_run_with_failed_calls_gives_one_alert_naming_the_entities_that_fell_short(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    failed = run_sync_job(
        instance, seeded, settings, ExplodingApiClient(unreachable_urls=[settings.endpoint_url("Users")])
    )
    assert not failed.success

    (alert,) = alert_sensor.tick()

    assert outline([alert]) == [("started", "run_failed", "Users, ActualOrg")]
    assert "unreachable" in alert["first_error"] and alert["first_error"].startswith("Users: ")
    assert alert["run_url"] == f"{UI}/runs/{failed.run_id}"


def test_a_resolved_check_alert_links_the_run_whose_check_passed(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    alert_sensor.settings = AlertSettings(ui_base_url=UI, failed_call_ratio=0.99, consecutive_failures=1)
    run_sync_job(instance, seeded, settings, users_unreachable(settings))
    assert sorted(outline(alert_sensor.tick())) == [
        ("started", "check_failing", "Users"),
        ("started", "run_failed", "Users"),
    ]
    passing = run_sync_job(instance, seeded, settings, RecordingApiClient())
    run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log")  # newest, failed

    (resolved,) = alert_sensor.tick()  # run_failed stays: the newest run failed too

    assert outline([resolved]) == [("resolved", "check_failing", "Users")]
    assert resolved["run_url"] == f"{UI}/runs/{passing.run_id}"


def test_a_resolved_run_alert_links_the_run_that_succeeded_not_a_later_dry_run(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log")
    assert outline(alert_sensor.tick()) == [("started", "run_failed", "- (failed before any entity ran)")]
    succeeded = run_sync_job(instance, seeded, settings, RecordingApiClient())
    run_sync_job(instance, seeded, settings, RecordingApiClient(), dry_run=True)

    (resolved,) = alert_sensor.tick()

    assert resolved["run_url"] == f"{UI}/runs/{succeeded.run_id}"


def test_a_failed_dry_run_raises_no_alert(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    dry = run_sync_job(instance, seeded, settings, RecordingApiClient(), log_url="nosuchdialect://log", dry_run=True)
    assert not dry.success and dry.dagster_run.tags[DRY_RUN_TAG] == "true"

    assert alert_sensor.tick() == []


def test_a_dry_run_does_not_clear_a_failing_check(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    alert_sensor.settings = AlertSettings(ui_base_url=UI, failed_call_ratio=0.99, consecutive_failures=2)
    for _ in range(2):
        run_sync_job(instance, seeded, settings, users_unreachable(settings))
    assert sorted(outline(alert_sensor.tick())) == [
        ("started", "check_failing", "Users"),
        ("started", "run_failed", "Users"),
    ]

    dry = run_sync_job(instance, seeded, settings, RecordingApiClient(), dry_run=True)
    assert dry.success

    assert alert_sensor.tick() == []
    assert sorted(json.loads(alert_sensor.cursor or "{}")["active"]) == [
        "check_failing:users",
        "run_failed:tamhr_sync_job",
    ]


def test_runs_between_two_evaluations_all_count_toward_the_streak(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    alert_sensor.settings = AlertSettings(ui_base_url=UI, failed_call_ratio=0.99, consecutive_failures=3)
    run_sync_job(instance, seeded, settings, users_unreachable(settings))
    assert about("check_failing", alert_sensor.tick()) == []
    run_sync_job(instance, seeded, settings, RecordingApiClient())
    seeded.insert_rows("Users", 1, start=100)
    for _ in range(2):
        run_sync_job(instance, seeded, settings, users_unreachable(settings))

    assert about("check_failing", alert_sensor.tick()) == []  # the pass between the two ticks broke the streak

    third = run_sync_job(instance, seeded, settings, users_unreachable(settings))
    (alert,) = about("check_failing", alert_sensor.tick())
    assert alert["counts"]["consecutive_failed_runs"] == 3
    assert alert["run_url"] == f"{UI}/runs/{third.run_id}"


def test_an_empty_cursor_announces_a_streak_still_on_once_and_an_old_one_not_at_all(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    alert_sensor.settings = AlertSettings(ui_base_url=UI, failed_call_ratio=0.99, consecutive_failures=2)
    for _ in range(2):
        run_sync_job(instance, seeded, settings, users_unreachable(settings))

    assert outline(about("check_failing", alert_sensor.tick())) == [("started", "check_failing", "Users")]
    assert alert_sensor.tick() == []

    run_sync_job(instance, seeded, settings, RecordingApiClient())
    alert_sensor.cursor = None  # the sensor was reset after the streak had ended

    assert alert_sensor.tick() == []


def test_a_cursor_from_before_streaks_were_kept_does_not_announce_its_alert_again(
    alert_sensor: AlertSensor, instance: dg.DagsterInstance, seeded: SyncDatabases, settings: Settings
) -> None:
    alert_sensor.settings = AlertSettings(ui_base_url=UI, failed_call_ratio=0.99, consecutive_failures=2)
    for _ in range(2):
        run_sync_job(instance, seeded, settings, users_unreachable(settings))
    assert outline(about("check_failing", alert_sensor.tick())) == [("started", "check_failing", "Users")]
    alert_sensor.cursor = json.dumps({"active": json.loads(alert_sensor.cursor or "{}")["active"]})

    assert alert_sensor.tick() == []

    passing = run_sync_job(instance, seeded, settings, RecordingApiClient())
    (resolved,) = about("check_failing", alert_sensor.tick())
    assert outline([resolved]) == [("resolved", "check_failing", "Users")]
    assert resolved["run_url"] == f"{UI}/runs/{passing.run_id}"


def write_throttled(databases: SyncDatabases, settings: Settings, when: dt.datetime, count: int) -> None:
    """SchedulerLog rows of `count` Users calls answered 429, as the engine writes them."""
    writer = SchedulerLogWriter(settings.scheduler_log.columns())
    url = settings.endpoint_url("Users")
    naive = when.astimezone(dt.UTC).replace(tzinfo=None)
    with databases.log.begin() as conn:
        for number in range(count):
            call = ApiCall(url, 3, 429, 5, "HTTP 429: slow down")
            conn.execute(
                sa.insert(scheduler_log_table), writer.row("Users", call, naive + dt.timedelta(seconds=number))
            )


def test_calls_rate_limited_more_often_than_the_setting_in_the_window_alert_once(
    alert_sensor: AlertSensor, seeded: SyncDatabases, settings: Settings
) -> None:
    alert_sensor.settings = AlertSettings(ui_base_url=UI, max_throttled_calls=3, failed_call_ratio=0.99)
    now = dt.datetime.now(dt.UTC)
    write_calls(seeded, settings, now - dt.timedelta(minutes=30), ok=100, failed=0)
    write_throttled(seeded, settings, now - dt.timedelta(minutes=20), 3)  # at the limit: no alert
    assert about("throttled", alert_sensor.tick()) == []

    write_throttled(seeded, settings, now - dt.timedelta(minutes=10), 1)
    (alert,) = about("throttled", alert_sensor.tick())
    assert (alert["state"], alert["entity"], alert["counts"]) == (
        "started",
        "Users",
        {"throttled_calls": 4, "limit": 3},
    )
    assert about("throttled", alert_sensor.tick()) == []  # once, not per evaluation

    alert_sensor.clock.offset = dt.timedelta(hours=1)  # the window moves past them
    (resolved,) = about("throttled", alert_sensor.tick())
    assert resolved["state"] == "resolved"


@dataclass
class QueueOf:
    """The one question the queued-runs alert asks of the Dagster instance, answered as the run queue holds."""

    queued: dict[str, int]

    def get_runs_count(self, filters: dg.RunsFilter) -> int:
        assert filters.statuses == [dg.DagsterRunStatus.QUEUED]
        return self.queued.get(str(filters.job_name), 0)


def test_more_queued_runs_than_the_setting_alert_naming_the_count() -> None:
    queue = QueueOf({TAMHR_SYNC.job_name: 1000, "other_sync_job": 5000})
    assert queued_runs_alerts(queue, TAMHR_SYNC.job_name, 1000) == []  # type: ignore[arg-type]

    queue.queued[TAMHR_SYNC.job_name] = 1001
    (alert,) = queued_runs_alerts(queue, TAMHR_SYNC.job_name, 1000)  # type: ignore[arg-type]
    assert alert.counts == {"queued_runs": 1001, "limit": 1000}
    assert alert.summary == "1001 runs of tamhr_sync_job are queued (alert above 1000)"
