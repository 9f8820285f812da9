"""Transient failures are retried inside the run: bounded, jittered, Retry-After honoured, every attempt logged."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import pytest

from sync_pipeline.engine.http.api import idempotency_key, parse_retry_after
from sync_pipeline.orchestration.sync_assets import delivery_policy
from sync_pipeline.settings import Settings, SettingsError, parse_settings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME

from .conftest import EntitySync, SettingsFactory, SyncDatabases, entity_id, raw_default_settings
from .fakes import FlakyApiClient, RecordingApiClient, ScriptedAnswer, TransportFault

USERS = ENTITIES_BY_NAME["Users"]
TRANSIENT_STATUSES = [408, 429, 500, 502, 503, 504]
FINAL_CLIENT_ERRORS = [401, 403, 404, 409]


def users_in_key_order(count: int) -> list[str]:
    """The EntityIds of Users rows 0 .. count-1 in the order the source pages them (by Id)."""
    return sorted(str(entity_id(USERS, number)) for number in range(count))


def logged_attempts(databases: SyncDatabases) -> list[tuple[str, int, int | None]]:
    """(Status, Attempt, HttpResponseCode) of every SchedulerLog row, oldest first."""
    rows = [(row["Status"], json.loads(row["AdditionalInformation"])) for row in databases.scheduler_log_rows()]
    return [(status, details["Attempt"], details["HttpResponseCode"]) for status, details in rows]


def failing(url: str, status: int, times: int = 100, retry_after: float | None = None) -> RecordingApiClient:
    """A fake API that answers `status` to the first `times` calls to `url`."""
    return RecordingApiClient(
        scripted_answers=[
            ScriptedAnswer(
                url=url, call_number=1, times=times, status=status, body="busy", retry_after_seconds=retry_after
            )
        ]
    )


@pytest.mark.parametrize("status", TRANSIENT_STATUSES)
def test_a_batch_answered_with_a_transient_status_is_retried_in_the_same_run_and_then_tracked(
    status: int, databases: SyncDatabases, run_sync: EntitySync, settings: Settings, waits: list[float]
) -> None:
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = failing(url, status, times=1)

    report = run_sync("Users", api=api)

    assert [call.status for call in api.calls(url)] == [status, 200]
    assert databases.tracked_ids("Users") == set(users_in_key_order(3))
    assert (report.sent, report.failed, report.api_calls, report.retries) == (3, 0, 2, 1)
    assert report.succeeded
    assert len(waits) == 1
    assert logged_attempts(databases) == [("Failure", 1, status), ("Success", 2, 200)]


@pytest.mark.parametrize("status", FINAL_CLIENT_ERRORS)
def test_a_batch_refused_with_another_client_error_is_not_retried_and_is_left_for_the_next_run(
    status: int, databases: SyncDatabases, run_sync: EntitySync, settings: Settings, waits: list[float]
) -> None:
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = failing(url, status)

    report = run_sync("Users", api=api)

    assert [call.status for call in api.calls(url)] == [status]
    assert waits == []
    assert (report.sent, report.failed, report.rejected, report.api_calls, report.retries) == (0, 3, 0, 1, 0)
    assert report.first_batch_error is not None and str(status) in report.first_batch_error
    assert databases.tracking_rows() == []
    assert databases.rejected_rows() == [], "a client error is not a rejection of the records' content"
    assert logged_attempts(databases) == [("Failure", 1, status)]


def test_a_call_that_gets_no_answer_is_retried_and_the_batch_then_tracked(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings, waits: list[float]
) -> None:
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = FlakyApiClient(transport_faults=[TransportFault(url=url, attempt_number=1, times=2, kind="timeout")])

    report = run_sync("Users", api=api)

    assert api.accepted_ids(url) == users_in_key_order(3)
    assert (report.sent, report.api_calls, report.retries) == (3, 3, 2)
    assert len(waits) == 2
    assert logged_attempts(databases) == [("Failure", 1, None), ("Failure", 2, None), ("Success", 3, 200)]
    failure = databases.scheduler_log_rows()[0]
    assert "ReadTimeout" in failure["ExceptionMessage"]


def test_a_refused_connection_is_retried_and_the_entity_goes_on_when_the_api_comes_back(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings, waits: list[float]
) -> None:
    databases.insert_rows("Users", 6)
    url = settings.endpoint_url("Users")
    api = FlakyApiClient(transport_faults=[TransportFault(url=url, attempt_number=1, kind="refused")])

    report = run_sync("Users", api=api)

    assert report.stopped_because is None
    assert sorted(api.accepted_ids(url)) == users_in_key_order(6)
    assert (report.sent, report.batches_ok, report.retries) == (6, 2, 1)
    assert logged_attempts(databases)[0] == ("Failure", 1, None)
    assert "connection refused" in databases.scheduler_log_rows()[0]["ExceptionMessage"]


@pytest.mark.parametrize("max_attempts", [1, 2, 5])
def test_a_batch_is_tried_at_most_max_attempts_times_each_attempt_logged(
    max_attempts: int,
    databases: SyncDatabases,
    run_sync: EntitySync,
    make_settings: SettingsFactory,
    waits: list[float],
) -> None:
    settings = make_settings(batch_size=3, retries={"max_attempts": max_attempts})
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = failing(url, 503)

    report = run_sync("Users", settings=settings, api=api)

    assert len(api.calls(url)) == max_attempts
    assert len(waits) == max_attempts - 1
    assert (report.api_calls, report.retries, report.failed, report.batches_failed) == (
        max_attempts,
        max_attempts - 1,
        3,
        1,
    )
    assert logged_attempts(databases) == [("Failure", n, 503) for n in range(1, max_attempts + 1)]
    assert databases.tracking_rows() == []


BACKOFF_RETRIES = {
    "max_attempts": 4,
    "initial_delay_seconds": 1.0,
    "max_delay_seconds": 3.0,
    "max_total_wait_seconds": 7200.0,
}
BACKOFF_CEILINGS = {1: 1.0, 2: 2.0, 3: 3.0}
"""The longest wait before each retry: initial * 2^(attempt-1) is 1, 2, then 4 capped at max_delay 3."""


def test_each_backoff_wait_is_within_the_doubling_range_capped_at_max_delay(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory, waits: list[float]
) -> None:
    # Waits are recorded, not slept, so production-sized delays cost nothing here.
    settings = make_settings(batch_size=1, retries=BACKOFF_RETRIES)
    batches = 5
    databases.insert_rows("Users", batches)
    url = settings.endpoint_url("Users")
    # Each batch fails three times, then goes through: calls 4k+1 .. 4k+3 fail, 4k+4 succeeds.
    api = RecordingApiClient(
        scripted_answers=[ScriptedAnswer(url=url, call_number=4 * k + 1, times=3, status=503) for k in range(batches)]
    )

    report = run_sync("Users", settings=settings, api=api)

    assert (report.sent, report.retries) == (batches, 3 * batches)
    assert len(waits) == 3 * batches
    for attempt, ceiling in BACKOFF_CEILINGS.items():
        samples = waits[attempt - 1 :: 3]
        assert all(0.0 <= wait <= ceiling for wait in samples), (attempt, samples)


def test_backoff_is_full_jitter_spread_over_the_whole_doubling_range(make_settings: SettingsFactory) -> None:
    retry = delivery_policy(make_settings(retries=BACKOFF_RETRIES)).retry
    rng = random.Random()

    for attempt, ceiling in {**BACKOFF_CEILINGS, 6: 3.0}.items():
        samples = [retry.backoff(attempt, rng) for _ in range(2000)]

        assert all(0.0 <= wait <= ceiling for wait in samples), attempt
        # Uniform over [0, ceiling]: each tenth of the range gets a share (odds of failing by chance: ~1e-89).
        tenths = {min(int(wait / ceiling * 10), 9) for wait in samples}
        assert tenths == set(range(10)), (attempt, sorted(tenths))


def test_retry_after_from_the_api_is_waited_instead_of_the_backoff(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory, waits: list[float]
) -> None:
    settings = make_settings(batch_size=3, retries={"max_delay_seconds": 10.0})
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = failing(url, 429, times=2, retry_after=7.0)

    report = run_sync("Users", settings=settings, api=api)

    assert waits == [7.0, 7.0]
    assert report.sent == 3


def test_a_retry_after_longer_than_max_delay_leaves_the_batch_for_the_next_run(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory, waits: list[float]
) -> None:
    """Waiting longer than max_delay could outlive the entity's lock lease, so the run does not wait."""
    settings = make_settings(batch_size=3, retries={"max_delay_seconds": 5.0})
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = failing(url, 429, times=1, retry_after=7.0)

    report = run_sync("Users", settings=settings, api=api)

    assert waits == []
    assert len(api.calls(url)) == 1
    assert (report.failed, report.batches_failed, report.sent) == (3, 1, 0)


def test_retrying_stops_before_a_wait_that_would_pass_max_total_wait(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory, waits: list[float]
) -> None:
    settings = make_settings(
        batch_size=3, retries={"max_attempts": 10, "max_delay_seconds": 5.0, "max_total_wait_seconds": 10.0}
    )
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = failing(url, 503, retry_after=4.0)

    report = run_sync("Users", settings=settings, api=api)

    assert waits == [4.0, 4.0], "a third wait of 4 would make 12 > 10"
    assert len(api.calls(url)) == 3
    assert (report.failed, report.batches_failed) == (3, 1)


def test_a_retry_after_longer_than_the_whole_wait_budget_leaves_the_batch_for_the_next_run_at_once(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory, waits: list[float]
) -> None:
    settings = make_settings(batch_size=3, retries={"max_attempts": 5, "max_total_wait_seconds": 300.0})
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = failing(url, 503, retry_after=3600.0)

    report = run_sync("Users", settings=settings, api=api)

    assert waits == []
    assert len(api.calls(url)) == 1
    assert report.failed == 3


def test_backoff_waits_add_up_to_no_more_than_max_total_wait(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory, waits: list[float]
) -> None:
    settings = make_settings(
        batch_size=3,
        retries={
            "max_attempts": 20,
            "initial_delay_seconds": 1.0,
            "max_delay_seconds": 1.0,
            "max_total_wait_seconds": 2.5,
        },
    )
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = failing(url, 500)

    run_sync("Users", settings=settings, api=api)

    assert 0 < sum(waits) <= 2.5
    assert len(api.calls(url)) == len(waits) + 1 < 20


def test_retries_of_one_batch_carry_the_same_idempotency_key_and_other_batches_their_own(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    databases.insert_rows("Users", 6)
    url = settings.endpoint_url("Users")
    api = FlakyApiClient(
        transport_faults=[TransportFault(url=url, attempt_number=1, kind="timeout")],
        scripted_answers=[ScriptedAnswer(url=url, call_number=1, status=503)],
    )

    run_sync("Users", api=api)

    first_key, second_key = api.attempt_keys(url)[0], api.attempt_keys(url)[-1]
    assert first_key != second_key
    assert api.attempt_keys(url) == [first_key, first_key, first_key, second_key]
    assert [call.idempotency_key for call in api.calls(url)] == [first_key, first_key, second_key]


def test_a_batch_resent_unchanged_in_a_later_run_carries_the_key_it_had_before(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    first = failing(url, 500)
    run_sync("Users", api=first)

    second = RecordingApiClient()
    run_sync("Users", api=second)

    (resent,) = second.calls(url)
    assert {call.idempotency_key for call in first.calls(url)} == {resent.idempotency_key}


def test_a_batch_resent_after_its_records_changed_carries_a_new_key_so_a_caching_receiver_takes_it(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    first = failing(url, 422)
    run_sync("Users", api=first)
    with databases.source_engine("Users").begin() as conn:
        conn.execute(databases.source_tables["Users"].update().values(Name="corrected since"))

    second = RecordingApiClient()
    run_sync("Users", api=second)

    (resent,) = second.calls(url)
    assert [record["Name"] for record in resent.records] == ["corrected since"] * 3
    assert resent.idempotency_key not in {call.idempotency_key for call in first.calls(url)}
    assert first.calls(url)[0].records != resent.records


def test_the_idempotency_key_depends_on_the_entity_every_id_of_the_batch_and_its_bytes() -> None:
    ids = users_in_key_order(3)
    body = b'[{"Id": 1}]'
    key = idempotency_key("Users", ids, body)

    assert key == idempotency_key("Users", tuple(ids), bytes(body))
    assert key != idempotency_key("ActualOrg", ids, body)
    assert key != idempotency_key("Users", ids[:2], body)
    assert key != idempotency_key("Users", [*ids, str(entity_id(USERS, 99))], body)
    assert key != idempotency_key("Users", [ids[0], ids[1], str(entity_id(USERS, 99))], body)
    assert key != idempotency_key("Users", ids, b'[{"Id": 2}]')
    assert len(key) == 64 and int(key, 16) >= 0, "a hex SHA-256: safe in an HTTP header"


NOW = dt.datetime(2015, 10, 21, 7, 27, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param(" 5 ", 5.0, id="padded delta-seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 30.0, id="HTTP-date"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 -0000", 30.0, id="HTTP-date without a zone is UTC"),
        pytest.param("Wed, 21 Oct 2015 09:28:00 +0200", 30.0, id="HTTP-date with an offset"),
        pytest.param("Wed, 21 Oct 2015 07:00:00 GMT", 0.0, id="HTTP-date in the past"),
    ],
)
def test_retry_after_is_read_as_seconds_or_as_an_http_date(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("soon", id="word"),
        pytest.param("-1", id="negative"),
        pytest.param("1.5", id="fraction"),
        pytest.param("Wed, 32 Oct 2015 07:28:00 GMT", id="impossible date"),
        pytest.param("\u00b2", id="superscript two (a latin-1 header byte)"),
    ],
)
def test_a_missing_or_malformed_retry_after_is_none_so_the_backoff_applies(header: str | None) -> None:
    assert parse_retry_after(header, now=NOW) is None


def retries_setting(name: str, value: object) -> dict[str, Any]:
    """The packaged default settings with one `retries` value replaced."""
    raw = raw_default_settings()
    raw["retries"] = {name: value}
    return raw


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_attempts", 0),
        ("max_attempts", -3),
        ("initial_delay_seconds", -1.0),
        ("max_delay_seconds", -0.5),
        ("max_total_wait_seconds", -10.0),
    ],
)
def test_a_bad_retries_setting_is_refused_naming_the_setting_and_the_value(name: str, value: object) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings(retries_setting(name, value), source="tamhr.yaml")

    assert f"retries.{name}" in str(raised.value)
    assert f"got {value}" in str(raised.value)


def test_a_single_attempt_and_no_delay_are_valid_retries_settings() -> None:
    raw = raw_default_settings()
    raw["retries"] = {"max_attempts": 1, "initial_delay_seconds": 0.0, "max_total_wait_seconds": 0.0}

    retries = parse_settings(raw).retries

    assert (retries.max_attempts, retries.initial_delay_seconds, retries.max_total_wait_seconds) == (1, 0.0, 0.0)
