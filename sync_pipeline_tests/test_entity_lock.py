"""The per-entity lock in the Log database: one sync of an entity at a time, and a dead holder's lease expires."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.entity_sync import EntitySyncReport, sync_entity
from sync_pipeline.engine.state.entity_lock import POLL_SECONDS, EntityLock, EntityLocked, LockLost
from sync_pipeline.engine.state.tracking import TrackingStore, utc_now
from sync_pipeline.engine.tables import lock_table
from sync_pipeline.orchestration.sync_assets import delivery_policy, entity_plan
from sync_pipeline.settings import LockSettings, Settings, SettingsError, parse_settings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC

from .conftest import SyncDatabases, entity_id, raw_default_settings
from .fakes import InterceptingApiClient, RecordingApiClient

USERS = ENTITIES_BY_NAME["Users"]
LEASE = 600.0
THREAD_TIMEOUT = 20.0


def lock_rows(databases: SyncDatabases) -> list[sa.RowMapping]:
    """Every TB_R_SYNC_LOCK row."""
    with databases.log.connect() as conn:
        return list(conn.execute(sa.select(lock_table).order_by(lock_table.c.EntityType)).mappings())


def expire_lease(databases: SyncDatabases, entity: str) -> None:
    """Move the entity's lease into the past, as if its holder hung (or died) past it."""
    with databases.log.begin() as conn:
        conn.execute(
            sa.update(lock_table)
            .where(lock_table.c.EntityType == entity)
            .values(ExpiresOn=utc_now() - dt.timedelta(seconds=1))
        )


def users_lock(
    databases: SyncDatabases, owner: str, wait_seconds: float = 0.0, sleep: Callable[[float], None] = time.sleep
) -> EntityLock:
    """A lock on Users for `owner` in the test's Log database."""
    return EntityLock(databases.log, "Users", owner, LEASE, wait_seconds, sleep)


def test_a_held_lock_refuses_a_second_holder_naming_the_first(databases: SyncDatabases) -> None:
    with users_lock(databases, "host-a:111:run 1"):
        with pytest.raises(EntityLocked) as raised, users_lock(databases, "host-b:222:run 2"):
            pytest.fail("the second holder must not get the lock")

        assert "Users" in str(raised.value)
        assert "host-a:111:run 1" in str(raised.value)
        assert [row["Owner"] for row in lock_rows(databases)] == ["host-a:111:run 1"]


def test_the_lock_is_a_lease_that_ends_lease_seconds_from_now(databases: SyncDatabases) -> None:
    before = utc_now()
    with users_lock(databases, "run-a"):
        (row,) = lock_rows(databases)
    after = utc_now()

    assert (row["EntityType"], row["Owner"]) == ("Users", "run-a")
    assert before <= row["AcquiredOn"] <= after
    assert before + dt.timedelta(seconds=LEASE) <= row["ExpiresOn"] <= after + dt.timedelta(seconds=LEASE)


def test_locks_of_different_entities_do_not_block_each_other(databases: SyncDatabases) -> None:
    with (
        users_lock(databases, "run-a"),
        EntityLock(databases.log, "ActualOrg", "run-b", LEASE),
    ):
        assert {(row["EntityType"], row["Owner"]) for row in lock_rows(databases)} == {
            ("Users", "run-a"),
            ("ActualOrg", "run-b"),
        }


def test_leaving_the_block_releases_the_lock_even_when_the_sync_failed(databases: SyncDatabases) -> None:
    with pytest.raises(RuntimeError), users_lock(databases, "run-a"):
        raise RuntimeError("the sync blew up")

    assert lock_rows(databases) == []
    with users_lock(databases, "run-b"):
        assert [row["Owner"] for row in lock_rows(databases)] == ["run-b"]


def test_a_waiting_holder_polls_until_its_wait_is_over_and_then_gives_up(databases: SyncDatabases) -> None:
    asked: list[float] = []

    def sleep(seconds: float) -> None:
        asked.append(seconds)
        time.sleep(0.005)

    with users_lock(databases, "run-a"):
        started = time.monotonic()
        with pytest.raises(EntityLocked, match="run-a"), users_lock(databases, "run-b", wait_seconds=0.1, sleep=sleep):
            pytest.fail("the lock was never released")
        waited = time.monotonic() - started

    assert waited >= 0.1
    assert asked and set(asked) == {POLL_SECONDS}


def test_a_waiting_holder_gets_the_lock_once_the_holder_releases_it(databases: SyncDatabases) -> None:
    first = users_lock(databases, "run-a")
    first.__enter__()
    asked: list[float] = []

    def sleep(seconds: float) -> None:  # the first run finishes while the second waits
        asked.append(seconds)
        first.__exit__(None, None, None)

    with users_lock(databases, "run-b", wait_seconds=60, sleep=sleep):
        assert [row["Owner"] for row in lock_rows(databases)] == ["run-b"]
    assert asked == [POLL_SECONDS]


def test_an_expired_lease_left_by_a_dead_run_is_taken_over(databases: SyncDatabases) -> None:
    with databases.log.begin() as conn:
        long_ago = utc_now() - dt.timedelta(hours=3)
        conn.execute(
            sa.insert(lock_table).values(
                EntityType="Users", Owner="killed-run", AcquiredOn=long_ago, ExpiresOn=long_ago + dt.timedelta(hours=1)
            )
        )

    with users_lock(databases, "run-b"):
        assert [row["Owner"] for row in lock_rows(databases)] == ["run-b"]


def test_refresh_extends_the_lease(databases: SyncDatabases) -> None:
    with users_lock(databases, "run-a") as lock:
        expire_lease(databases, "Users")
        lock.refresh()

        (row,) = lock_rows(databases)
        assert row["ExpiresOn"] > utc_now() + dt.timedelta(seconds=LEASE - 60)


def test_refresh_after_another_run_took_the_expired_lease_raises_lock_lost_naming_it(databases: SyncDatabases) -> None:
    with users_lock(databases, "run-a") as stalled:
        expire_lease(databases, "Users")
        with users_lock(databases, "run-b"):
            with pytest.raises(LockLost) as raised:
                stalled.refresh()

            assert "run-b" in str(raised.value)


def test_a_holder_whose_lease_was_taken_over_does_not_release_the_new_holders_lock(databases: SyncDatabases) -> None:
    stalled = users_lock(databases, "run-a")
    stalled.__enter__()
    expire_lease(databases, "Users")
    with users_lock(databases, "run-b"):
        stalled.__exit__(None, None, None)

        assert [row["Owner"] for row in lock_rows(databases)] == ["run-b"]


def sync_users_as(
    owner: str,
    databases: SyncDatabases,
    settings: Settings,
    api: RecordingApiClient,
    sleep: Callable[[float], None] = lambda seconds: None,
) -> EntitySyncReport:
    """Sync Users as the run `owner`, as its asset would."""
    tracking = TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns()))
    return sync_entity(
        entity_plan(TAMHR_SYNC, USERS, settings),
        databases.source_engine("Users"),
        tracking,
        api,
        logging.getLogger("sync_test"),
        owner=owner,
        policy=delivery_policy(settings),
        sleep=sleep,
    )


def all_users(count: int) -> set[str]:
    """The EntityIds of Users rows 0 .. count-1."""
    return {str(entity_id(USERS, number)) for number in range(count)}


def test_a_sync_of_an_entity_locked_by_another_run_sends_nothing_and_names_the_holder(
    databases: SyncDatabases, settings: Settings, api: RecordingApiClient
) -> None:
    databases.insert_rows("Users", 6)

    with users_lock(databases, "host-a:111:run 1"):
        report = sync_users_as("host-b:222:run 2", databases, settings, api)

    assert report.stopped_because is not None and "host-a:111:run 1" in report.stopped_because
    assert api.calls(settings.endpoint_url("Users")) == []
    assert (report.sent, report.api_calls) == (0, 0)
    assert databases.tracking_rows() == []


def test_a_sync_whose_lease_is_taken_mid_run_stops_before_sending_anything_more(
    databases: SyncDatabases, settings: Settings
) -> None:
    databases.insert_rows("Users", 9)
    url = settings.endpoint_url("Users")
    api = InterceptingApiClient()
    taken: list[EntityLock] = []
    short_lease = settings.model_copy(update={"locking": LockSettings(lease_seconds=0.4)})

    def take_over_during_the_first_call(called_url: str) -> None:
        if not taken:  # the run stalls past its lease during its first call, and another run takes over
            expire_lease(databases, "Users")
            taken.append(users_lock(databases, "run-b").__enter__())
            time.sleep(0.15)  # past a quarter of the lease: run-a extends (and so checks) it before its next call

    api.on_each_call(take_over_during_the_first_call)

    report = sync_users_as("run-a", databases, short_lease, api)

    assert report.stopped_because is not None and "run-b" in report.stopped_because
    assert api.call_sizes(url) == [3]
    assert report.sent == 3 and len(databases.tracked_ids("Users")) == 3
    assert [row["Owner"] for row in lock_rows(databases)] == ["run-b"]


def test_two_syncs_started_together_never_send_a_record_twice_one_is_refused(
    databases: SyncDatabases, settings: Settings
) -> None:
    databases.insert_rows("Users", 9)
    url = settings.endpoint_url("Users")
    api = InterceptingApiClient()
    gate = threading.Event()

    def hold_the_winner_mid_send(called_url: str) -> None:
        gate.wait(THREAD_TIMEOUT)

    api.on_each_call(hold_the_winner_mid_send)
    start_together = threading.Barrier(2)

    def sync_as(owner: str) -> EntitySyncReport:
        start_together.wait(THREAD_TIMEOUT)
        return sync_users_as(owner, databases, settings, api)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {pool.submit(sync_as, owner): owner for owner in ("run-a", "run-b")}
        done, _ = wait(futures, timeout=THREAD_TIMEOUT, return_when=FIRST_COMPLETED)
        gate.set()
        reports = {futures[future]: future.result(THREAD_TIMEOUT) for future in futures}

    assert len(done) == 1, "one sync held the lock while the other returned"
    (loser,) = [futures[future] for future in done]
    (winner,) = set(reports) - {loser}
    refusal = reports[loser].stopped_because
    assert refusal is not None and "being synced by another run" in refusal and winner in refusal
    assert (reports[loser].sent, reports[loser].api_calls) == (0, 0)
    assert (reports[winner].sent, reports[winner].stopped_because) == (9, None)
    received = Counter(record["Id"] for call in api.calls(url) for record in call.records)
    assert set(received) == all_users(9)
    assert set(received.values()) == {1}, "no record was sent twice"
    assert lock_rows(databases) == []


def test_a_sync_that_waits_for_the_lock_finds_everything_sent_and_sends_nothing_again(
    databases: SyncDatabases, settings: Settings
) -> None:
    databases.insert_rows("Users", 9)
    url = settings.endpoint_url("Users")
    waiting_settings = settings.model_copy(update={"locking": LockSettings(lease_seconds=LEASE, wait_seconds=60)})
    api = InterceptingApiClient()
    first_is_sending, gate = threading.Event(), threading.Event()

    def hold_the_first_sync(called_url: str) -> None:
        first_is_sending.set()
        gate.wait(THREAD_TIMEOUT)

    api.on_each_call(hold_the_first_sync)
    second_waits: list[float] = []
    second_is_waiting = threading.Event()

    def second_sleep(seconds: float) -> None:
        second_waits.append(seconds)
        second_is_waiting.set()
        time.sleep(0.01)

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(sync_users_as, "run-a", databases, waiting_settings, api)
        assert first_is_sending.wait(THREAD_TIMEOUT)
        second = pool.submit(sync_users_as, "run-b", databases, waiting_settings, api, second_sleep)
        assert second_is_waiting.wait(THREAD_TIMEOUT)
        gate.set()
        first_report, second_report = first.result(THREAD_TIMEOUT), second.result(THREAD_TIMEOUT)

    assert (first_report.sent, first_report.stopped_because) == (9, None)
    assert (second_report.sent, second_report.already_tracked, second_report.stopped_because) == (0, 9, None)
    assert second_waits and set(second_waits) == {POLL_SECONDS}
    received = Counter(record["Id"] for call in api.calls(url) for record in call.records)
    assert set(received) == all_users(9) and set(received.values()) == {1}


def lock_and_timing(lease: float, timeout: float, max_delay: float) -> dict[str, object]:
    """The packaged default settings with the lease, the API timeout and the longest backoff set."""
    raw = raw_default_settings()
    raw["locking"] = {"lease_seconds": lease}
    raw["api"]["timeout_seconds"] = timeout
    raw["retries"] = {"max_delay_seconds": max_delay}
    return raw


@pytest.mark.parametrize("lease", [200.0, 150.0, 1.0], ids=["equal", "below", "far below"])
def test_a_lease_not_above_four_thirds_of_the_timeout_plus_two_longest_waits_is_refused_naming_the_setting(
    lease: float,
) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings(lock_and_timing(lease, timeout=30.0, max_delay=60.0), source="tamhr.yaml")

    message = str(raised.value)
    assert "locking.lease_seconds" in message
    assert "api.timeout_seconds" in message and "retries.max_delay_seconds" in message
    assert f"got {lease:g}" in message


def test_a_lease_above_four_thirds_of_the_timeout_plus_two_longest_waits_is_accepted() -> None:
    """The lease is extended once a quarter of it has passed, so three quarters must cover a call, the
    rate-limit wait inside it and the retry wait after it."""
    settings = parse_settings(lock_and_timing(200.5, timeout=30.0, max_delay=60.0))

    assert settings.locking.lease_seconds == 200.5


@pytest.mark.parametrize(("name", "value"), [("lease_seconds", 0.0), ("wait_seconds", -1.0)])
def test_a_bad_locking_setting_is_refused_naming_it(name: str, value: float) -> None:
    raw = raw_default_settings()
    raw["locking"] = {name: value}

    with pytest.raises(SettingsError, match=f"locking.{name}"):
        parse_settings(raw)
