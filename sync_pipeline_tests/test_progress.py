"""A long entity's progress in the run's log: one line per interval with its counts, of how many, rate and time left.

The engine tests run on a clock that moves one second per API call, so every line is known
exactly; the real receiver's test holds only what no machine's speed can change.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.entity_sync import EntitySyncReport, sync_entity
from sync_pipeline.engine.progress import ProgressReporter
from sync_pipeline.engine.sinks.http_batch import DeliveryCounts
from sync_pipeline.engine.state.selection import SEND_UNTRACKED, Selection
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.orchestration.sync_assets import build_entity_assets, delivery_policy, entity_plan
from sync_pipeline.resources.api_client import HttpSyncApiClient, SyncApiClient
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import ProgressSettings, Settings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC

from .conftest import SettingsFactory, SyncDatabases, entity_id
from .fakes import InterceptingApiClient, ScriptedAnswer

USERS = ENTITIES_BY_NAME["Users"]
LOGGER = "progress_test"
PROGRESS_LINE = re.compile(
    r"^Users: progress (\d+) of (\d+) \(\d+%\): sent (\d+), rejected (\d+), failed (\d+); "
    r"[\d.]+ records/s, about \S+ left$"
)


class CallClock:
    """A monotonic clock that moves one second each time the API is called, and not otherwise."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self, url: str) -> None:
        """The hook of one API call."""
        self.now += 1.0


def with_progress(settings: Settings, interval_seconds: float, **api: Any) -> Settings:
    """The settings with a progress interval (and API settings) of the test's own."""
    return settings.model_copy(
        update={
            "progress": ProgressSettings(interval_seconds=interval_seconds),
            "api": settings.api.model_copy(update=api),
        }
    )


def sync_users(
    databases: SyncDatabases,
    settings: Settings,
    api: SyncApiClient,
    clock: Callable[[], float] = time.monotonic,
    selection: Selection = SEND_UNTRACKED,
) -> EntitySyncReport:
    """Sync Users through the engine as its asset would, on the test's clock."""
    return sync_entity(
        entity_plan(TAMHR_SYNC, USERS, settings),
        databases.source_engine("Users"),
        TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns())),
        api,
        logging.getLogger(LOGGER),
        owner="progress-test",
        policy=delivery_policy(settings),
        selection=selection,
        sleep=lambda seconds: None,
        clock=clock,
    )


class SyncLog:
    """What the test's syncs logged, from INFO up."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger=LOGGER)
        self._caplog = caplog

    def progress(self) -> list[str]:
        """The progress lines, in order."""
        infos = [r.getMessage() for r in self._caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
        return [message for message in infos if message.startswith("Users: progress ")]

    def warnings(self) -> list[str]:
        """The warnings and errors, in order."""
        return [r.getMessage() for r in self._caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def sync_log(caplog: pytest.LogCaptureFixture) -> SyncLog:
    """The log of the test's syncs."""
    return SyncLog(caplog)


def ticking_api(scripted_answers: list[ScriptedAnswer] | None = None) -> tuple[InterceptingApiClient, CallClock]:
    """The fake API, each call moving its clock on by one second."""
    api, clock = InterceptingApiClient(scripted_answers=scripted_answers or []), CallClock()
    api.on_each_call(clock.tick)
    return api, clock


def test_a_long_entity_logs_its_counts_of_the_untracked_total_with_rate_and_time_left_once_per_interval(
    databases: SyncDatabases,
    make_settings: SettingsFactory,
    sync_log: SyncLog,
) -> None:
    settings = with_progress(make_settings(batch_size=3), interval_seconds=2)
    databases.insert_rows("Users", 30)
    databases.track("Users", [str(entity_id(USERS, n)) for n in range(24, 30)])  # 24 candidates
    with databases.source_engine("Users").begin() as conn:  # refused by the model; last in key order
        conn.execute(sa.text("UPDATE TB_M_USER SET IsActive = 'yes' WHERE Id = :id"), {"id": entity_id(USERS, 4).hex})
    url = settings.endpoint_url("Users")
    api, clock = ticking_api([ScriptedAnswer(url=url, call_number=2, times=3)])  # batch 2 fails its 3 attempts

    report = sync_users(databases, settings, api, clock)

    assert api.call_sizes(url) == [3, 3, 3, 3, 3, 3, 3, 3, 3, 2]  # 8 batches, batch 2 tried 3 times
    assert (report.candidates, report.sent, report.rejected, report.failed) == (24, 20, 1, 3)
    assert sync_log.progress() == [
        "Users: progress 6 of 24 (25%): sent 3, rejected 0, failed 3; 1.5 records/s, about 12s left",  # t=4s
        "Users: progress 12 of 24 (50%): sent 9, rejected 0, failed 3; 2.0 records/s, about 6s left",  # t=6s
        "Users: progress 18 of 24 (75%): sent 15, rejected 0, failed 3; 2.2 records/s, about 3s left",  # t=8s
        "Users: progress 24 of 24 (100%): sent 20, rejected 1, failed 3; 2.4 records/s, about 0s left",  # t=10s
    ]


def test_a_resend_counts_what_it_selects_and_one_by_time_reports_without_a_total(
    databases: SyncDatabases,
    make_settings: SettingsFactory,
    sync_log: SyncLog,
) -> None:
    settings = with_progress(make_settings(batch_size=3), interval_seconds=1)
    databases.insert_rows("Users", 9)
    databases.track("Users", [str(entity_id(USERS, n)) for n in range(9)])
    api, clock = ticking_api()
    two = frozenset(str(entity_id(USERS, n)) for n in (2, 7))
    after_tracking = dt.datetime(2024, 6, 2)  # the test's tracking rows are stamped 2024-06-01

    by_time = sync_users(databases, settings, api, clock, Selection("tracked_before", tracked_before=after_tracking))
    every = sync_users(databases, settings, api, clock, Selection(resend="all"))
    chosen = sync_users(databases, settings, api, clock, Selection(resend="ids", ids=two))

    assert (by_time.candidates, every.candidates, chosen.candidates) == (None, 9, 2)
    assert (by_time.sent, every.sent, chosen.sent) == (9, 9, 2)
    assert sync_log.progress() == [
        "Users: progress 3: sent 3, rejected 0, failed 0; 3.0 records/s",
        "Users: progress 6: sent 6, rejected 0, failed 0; 3.0 records/s",
        "Users: progress 9: sent 9, rejected 0, failed 0; 3.0 records/s",
        "Users: progress 3 of 9 (33%): sent 3, rejected 0, failed 0; 3.0 records/s, about 2s left",
        "Users: progress 6 of 9 (66%): sent 6, rejected 0, failed 0; 3.0 records/s, about 1s left",
        "Users: progress 9 of 9 (100%): sent 9, rejected 0, failed 0; 3.0 records/s, about 0s left",
        "Users: progress 2 of 2 (100%): sent 2, rejected 0, failed 0; 2.0 records/s, about 0s left",
    ]


def refuse_whole_table_counts(engine: sa.Engine) -> None:
    """Make the database refuse `SELECT count(*) FROM <table>` without a WHERE, as a denied statement would."""

    def refuse(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.startswith("SELECT count(*)") and "WHERE" not in statement:
            raise sqlite3.OperationalError("not authorized to count TB_M_USER")

    sa.event.listen(engine, "before_cursor_execute", refuse)


def test_a_refused_count_does_not_fail_the_sync_it_reports_progress_without_a_total_or_time_left(
    databases: SyncDatabases,
    make_settings: SettingsFactory,
    sync_log: SyncLog,
) -> None:
    settings = with_progress(make_settings(batch_size=3), interval_seconds=2)
    databases.insert_rows("Users", 9)
    refuse_whole_table_counts(databases.source_engine("Users"))
    api, clock = ticking_api()

    report = sync_users(databases, settings, api, clock)

    assert report.succeeded and report.sent == 9 and report.candidates is None
    assert sync_log.progress() == ["Users: progress 6: sent 6, rejected 0, failed 0; 3.0 records/s"]
    assert sync_log.warnings() == [
        "Users: progress without a total or time left: cannot count TB_M_USER: "
        "OperationalError: not authorized to count TB_M_USER"
    ]


def test_an_interval_of_zero_logs_no_progress_and_counts_nothing(
    databases: SyncDatabases,
    make_settings: SettingsFactory,
    sync_log: SyncLog,
) -> None:
    settings = with_progress(make_settings(batch_size=3), interval_seconds=0)
    databases.insert_rows("Users", 30)
    refuse_whole_table_counts(databases.source_engine("Users"))  # a count would be warned about
    api, clock = ticking_api()

    report = sync_users(databases, settings, api, clock)

    assert report.succeeded and report.sent == 30 and clock.now == 10
    assert report.candidates is None
    assert sync_log.progress() == []
    assert sync_log.warnings() == []


def test_batches_settling_at_once_on_several_threads_log_one_line_between_them(
    sync_log: SyncLog,
) -> None:
    clock = CallClock()
    reporter = ProgressReporter("Users", 10, logging.getLogger(LOGGER), candidates=100, clock=clock)
    clock.now = 10.0
    counts = DeliveryCounts(sent=40)
    all_at_once = threading.Barrier(8)

    def settle() -> None:
        all_at_once.wait()
        reporter.batch_settled(counts)

    threads = [threading.Thread(target=settle) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sync_log.progress() == [
        "Users: progress 40 of 100 (40%): sent 40, rejected 0, failed 0; 4.0 records/s, about 15s left"
    ]


API_KEY = "progress-test-key"


@pytest.fixture
def slow_receiver() -> Iterator[ReceivingApi]:
    """The real receiver, taking 50 ms to answer every call."""
    with ReceivingApi(API_KEY) as receiver:
        receiver.log.before_answering = lambda endpoint, number: time.sleep(0.05)
        yield receiver


def test_against_a_slow_receiver_with_two_in_flight_progress_comes_at_most_once_per_interval_and_adds_up(
    slow_receiver: ReceivingApi,
    databases: SyncDatabases,
    make_settings: SettingsFactory,
    sync_log: SyncLog,
) -> None:
    interval = 0.2
    settings = with_progress(make_settings(batch_size=25), interval, base_url=slow_receiver.base_url, max_in_flight=2)
    databases.insert_rows("Users", 600)  # 24 calls of at least 50 ms, 2 at a time: at least 0.6 s

    report = sync_users(databases, settings, HttpSyncApiClient(api_key=API_KEY))

    assert report.succeeded and report.sent == 600 == slow_receiver.log.received("users")
    lines = sync_log.progress()
    figures = [tuple(map(int, match.groups())) for line in lines if (match := PROGRESS_LINE.match(line))]
    assert len(figures) == len(lines) >= 1, lines
    assert len(lines) <= report.duration_seconds / interval < 24, "at most one line per interval, not one per batch"
    for done, candidates, sent, rejected, failed in figures:
        assert candidates == 600 and done == sent + rejected + failed and sent % 25 == 0
    assert [done for done, *_ in figures] == sorted(done for done, *_ in figures)


def test_a_materialization_carries_its_candidates_and_the_run_log_its_progress(
    databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    settings = with_progress(make_settings(batch_size=3), interval_seconds=1e-9)  # a line at every batch
    databases.insert_rows("Users", 10)
    databases.track("Users", [str(entity_id(USERS, n)) for n in range(4)])
    resources = {key: SyncDatabase(url=url) for key, url in databases.urls.items()}
    instance = dg.DagsterInstance.ephemeral()

    result = dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings),
        resources={**resources, "sync_api": InterceptingApiClient()},
        selection=["users"],
        instance=instance,
    )

    (materialization,) = result.asset_materializations_for_node("users")
    assert materialization.metadata["candidates"] == dg.MetadataValue.int(6)
    assert materialization.metadata["sent"] == dg.MetadataValue.int(6)
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    progress = [message for message in messages if message.startswith("Users: progress ")]
    assert [line.split(":")[1] for line in progress] == [" progress 3 of 6 (50%)", " progress 6 of 6 (100%)"]


@pytest.mark.parametrize(
    ("sent", "left"), [(10_000, "about 16m30s left"), (1_000, "about 2h46m left"), (999_990, "about 0s left")]
)
def test_the_time_left_of_a_million_reads_in_minutes_or_hours(sent: int, left: str, sync_log: SyncLog) -> None:
    clock = CallClock()
    reporter = ProgressReporter("Users", 10, logging.getLogger(LOGGER), candidates=1_000_000, clock=clock)
    clock.now = 10.0

    reporter.batch_settled(DeliveryCounts(sent=sent))

    (line,) = sync_log.progress()
    assert line.endswith(f"records/s, {left}")
