"""A batch refused for its content (400/422) is halved until each bad record is alone; good records go through."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import dagster as dg
import pytest

from sync_pipeline.engine.http.api import MAX_RESPONSE_EXCERPT
from sync_pipeline.engine.sinks.http_batch import MAX_REJECTED_IDS_SHOWN
from sync_pipeline.orchestration.sync_assets import CHECK_NAME, build_entity_assets
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.settings import RejectionSettings, Settings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC

from .conftest import EntitySync, SettingsFactory, SyncDatabases, entity_id
from .fakes import RecordingApiClient, ScriptedAnswer, ValidatingApiClient

USERS = ENTITIES_BY_NAME["Users"]


def users_in_key_order(count: int) -> list[str]:
    """The EntityIds of Users rows 0 .. count-1 in the order the source pages them (by Id)."""
    return sorted(str(entity_id(USERS, number)) for number in range(count))


def with_split_depth(settings: Settings, depth: int) -> Settings:
    """The same settings with `rejections.max_split_depth` set to `depth`."""
    return settings.model_copy(update={"rejections": RejectionSettings(max_split_depth=depth)})


def ids_per_call(api: RecordingApiClient, url: str) -> list[list[str]]:
    """The record Ids of each call to `url`, in order."""
    return [[record["Id"] for record in call.records] for call in api.calls(url)]


@pytest.mark.parametrize("status", [400, 422])
def test_a_refused_batch_is_halved_until_the_bad_record_is_alone_and_the_good_ones_go_through(
    status: int, databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory, waits: list[float]
) -> None:
    settings = make_settings(batch_size=8)
    databases.insert_rows("Users", 8)
    ids = users_in_key_order(8)
    url = settings.endpoint_url("Users")
    api = ValidatingApiClient(refused_ids=[ids[5]], refusal_status=status)

    report = run_sync("Users", settings=settings, api=api)

    # both halves are sent before either is split: comparing their refusals needs both answers
    assert ids_per_call(api, url) == [ids, ids[:4], ids[4:], ids[4:6], ids[6:], [ids[4]], [ids[5]]]
    assert [call.status for call in api.calls(url)] == [status, 200, status, status, 200, 200, status]
    assert sorted(api.accepted_ids(url)) == sorted(set(ids) - {ids[5]})
    assert databases.tracked_ids("Users") == set(ids) - {ids[5]}
    assert (report.sent, report.rejected, report.failed, report.batches_failed) == (7, 1, 0, 0)
    assert report.rejected_ids == [ids[5]]
    assert not report.succeeded and report.stopped_because is None
    assert waits == [], "a refusal of the content is not retried"


def test_the_isolated_record_is_kept_with_its_status_response_and_time_and_is_not_tracked(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=4)
    databases.insert_rows("Users", 4)
    bad = users_in_key_order(4)[2]
    api = ValidatingApiClient(refused_ids=[bad], refusal_status=422)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    run_sync("Users", settings=settings, api=api)

    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    (rejection,) = databases.rejected_rows()
    assert (rejection["EntityType"], rejection["EntityId"], rejection["HttpResponseCode"]) == ("Users", bad, 422)
    assert "422" in rejection["Reason"]
    assert json.loads(rejection["ResponseExcerpt"]) == {"errors": [{"Id": bad, "error": "fails validation"}]}
    assert before - dt.timedelta(seconds=1) <= rejection["LastRejectedOn"] <= after + dt.timedelta(seconds=1)
    assert (rejection["RejectionCount"], rejection["FirstRejectedOn"]) == (1, rejection["LastRejectedOn"])
    assert bad not in databases.tracked_ids("Users")


def test_two_bad_records_in_different_halves_are_each_isolated(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=8)
    databases.insert_rows("Users", 8)
    ids = users_in_key_order(8)
    api = ValidatingApiClient(refused_ids=[ids[1], ids[6]])

    report = run_sync("Users", settings=settings, api=api)

    assert sorted(report.rejected_ids) == sorted([ids[1], ids[6]])
    assert sorted(row["EntityId"] for row in databases.rejected_rows()) == sorted([ids[1], ids[6]])
    assert databases.tracked_ids("Users") == set(ids) - {ids[1], ids[6]}
    assert (report.sent, report.rejected) == (6, 2)


def test_a_batch_of_only_bad_records_rejects_each_of_them_and_tracks_none(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=4)
    databases.insert_rows("Users", 4)
    ids = users_in_key_order(4)
    api = ValidatingApiClient(refused_ids=ids)

    report = run_sync("Users", settings=settings, api=api)

    assert sorted(report.rejected_ids) == ids and report.rejected == 4
    assert sorted(row["EntityId"] for row in databases.rejected_rows()) == ids
    assert databases.tracking_rows() == []


def test_with_split_depth_zero_the_whole_batch_is_rejected_as_a_unit(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = with_split_depth(make_settings(batch_size=8), 0)
    databases.insert_rows("Users", 8)
    ids = users_in_key_order(8)
    url = settings.endpoint_url("Users")
    api = ValidatingApiClient(refused_ids=[ids[5]])

    report = run_sync("Users", settings=settings, api=api)

    assert ids_per_call(api, url) == [ids]
    assert sorted(row["EntityId"] for row in databases.rejected_rows()) == ids
    assert {row["HttpResponseCode"] for row in databases.rejected_rows()} == {422}
    assert (report.sent, report.rejected) == (0, 8)
    assert databases.tracking_rows() == []


def test_the_split_depth_bounds_how_many_times_a_batch_is_halved(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = with_split_depth(make_settings(batch_size=8), 1)
    databases.insert_rows("Users", 8)
    ids = users_in_key_order(8)
    url = settings.endpoint_url("Users")
    api = ValidatingApiClient(refused_ids=[ids[5]])

    report = run_sync("Users", settings=settings, api=api)

    assert ids_per_call(api, url) == [ids, ids[:4], ids[4:]]
    assert sorted(row["EntityId"] for row in databases.rejected_rows()) == ids[4:]
    assert databases.tracked_ids("Users") == set(ids[:4])
    assert (report.sent, report.rejected) == (4, 4)


def test_every_call_of_a_split_is_logged_with_its_own_scheduler_log_row(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=4)
    databases.insert_rows("Users", 4)
    ids = users_in_key_order(4)
    url = settings.endpoint_url("Users")
    api = ValidatingApiClient(refused_ids=[ids[0]])

    run_sync("Users", settings=settings, api=api)

    logged = sorted(
        (row["Status"], details["BatchSize"], details["HttpResponseCode"], details["Attempt"])
        for row in databases.scheduler_log_rows()
        for details in [json.loads(row["AdditionalInformation"])]
    )
    sent = sorted(
        ("Success" if call.status == 200 else "Failure", len(call.records), call.status, 1) for call in api.calls(url)
    )
    assert logged == sent
    assert len(logged) == 5  # [0..3] refused, [0,1] refused, [0] refused, [1] ok, [2,3] ok


def test_each_half_of_a_split_carries_its_own_idempotency_key(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=4)
    databases.insert_rows("Users", 4)
    url = settings.endpoint_url("Users")
    api = ValidatingApiClient(refused_ids=[users_in_key_order(4)[3]])

    run_sync("Users", settings=settings, api=api)

    keys = [call.idempotency_key for call in api.calls(url)]
    assert len(keys) == 5 and len(set(keys)) == 5


def test_a_rejected_record_is_tried_again_next_run_and_tracked_once_the_api_accepts_it(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=4)
    databases.insert_rows("Users", 4)
    bad = users_in_key_order(4)[1]
    url = settings.endpoint_url("Users")
    run_sync("Users", settings=settings, api=ValidatingApiClient(refused_ids=[bad]))

    later = RecordingApiClient()
    report = run_sync("Users", settings=settings, api=later)

    assert later.accepted_ids(url) == [bad]
    assert (report.already_tracked, report.sent, report.rejected) == (3, 1, 0)
    assert report.succeeded
    assert databases.tracked_ids("Users") == set(users_in_key_order(4))
    assert [row["EntityId"] for row in databases.rejected_rows()] == [bad], "the earlier rejection stays on record"


def test_a_record_still_refused_next_run_is_rejected_again_without_resending_the_good_ones(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=4)
    databases.insert_rows("Users", 4)
    bad = users_in_key_order(4)[1]
    url = settings.endpoint_url("Users")
    run_sync("Users", settings=settings, api=ValidatingApiClient(refused_ids=[bad]))

    later = ValidatingApiClient(refused_ids=[bad])
    report = run_sync("Users", settings=settings, api=later)

    assert ids_per_call(later, url) == [[bad]]
    assert (report.already_tracked, report.sent, report.rejected, report.rejected_ids) == (3, 0, 1, [bad])
    (row,) = databases.rejected_rows()
    assert (row["EntityId"], row["RejectionCount"]) == (bad, 2)
    assert row["FirstRejectedOn"] < row["LastRejectedOn"]


def test_the_rejected_count_is_complete_when_the_ids_shown_are_capped(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=32)
    databases.insert_rows("Users", 32)
    ids = users_in_key_order(32)
    api = ValidatingApiClient(refused_ids=ids[:25])

    report = run_sync("Users", settings=settings, api=api)

    assert report.rejected == 25
    assert len(report.rejected_ids) == MAX_REJECTED_IDS_SHOWN < 25
    assert set(report.rejected_ids) <= set(ids[:25])
    assert len(databases.rejected_rows()) == 25
    assert databases.tracked_ids("Users") == set(ids[25:])


def test_a_long_refusal_is_kept_as_the_start_of_the_response(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = with_split_depth(make_settings(batch_size=3), 0)
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    body = json.dumps({"errors": [f"field {n} is invalid" for n in range(200)]})
    api = RecordingApiClient(scripted_answers=[ScriptedAnswer(url=url, call_number=1, status=400, body=body)])

    run_sync("Users", settings=settings, api=api)

    excerpts = {row["ResponseExcerpt"] for row in databases.rejected_rows()}
    assert len(body) > MAX_RESPONSE_EXCERPT
    assert excerpts == {body[:MAX_RESPONSE_EXCERPT]}


def test_rejections_show_in_the_asset_metadata_and_fail_its_check(
    databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=4)
    databases.insert_rows("Users", 4)
    ids = users_in_key_order(4)
    resources: dict[str, Any] = {key: SyncDatabase(url=url) for key, url in databases.urls.items()}
    resources["sync_api"] = ValidatingApiClient(refused_ids=[ids[0], ids[3]])

    result = dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings), resources=resources, selection=["users"], raise_on_error=False
    )

    assert not result.success, "a run that left records undelivered fails"
    (event,) = result.get_asset_materialization_events()
    assert event.materialization is not None
    metadata = {name: entry.value for name, entry in event.materialization.metadata.items()}
    assert (metadata["rejected"], metadata["sent"]) == (2, 2)
    assert str(metadata["rejected_ids"]).split(", ") == [ids[0], ids[3]]
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
    assert not check.passed
    assert check.metadata["rejected"].value == 2


def with_call_budget(settings: Settings, calls: int) -> Settings:
    """The same settings with `rejections.max_calls_per_batch` set to `calls`."""
    return settings.model_copy(update={"rejections": RejectionSettings(max_calls_per_batch=calls)})


def test_a_receiver_that_refuses_everything_alike_costs_three_calls_and_every_record_is_rejected_with_its_reason(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=64)
    databases.insert_rows("Users", 64)
    url = settings.endpoint_url("Users")
    body = '{"error": "bad request"}'
    api = RecordingApiClient(
        scripted_answers=[ScriptedAnswer(url=url, call_number=1, times=1000, status=400, body=body)]
    )

    report = run_sync("Users", settings=settings, api=api)

    assert api.call_sizes(url) == [64, 32, 32], "halving 64 records down to singles would cost 127 calls"
    assert (report.rejected, report.sent, report.api_calls) == (64, 0, 3)
    rows = databases.rejected_rows()
    assert len(rows) == 64 and {row["ResponseExcerpt"] for row in rows} == {body}
    assert {row["Reason"] for row in rows} == {
        "rejected by the API: HTTP 400 (both halves of 64 records refused alike, not split further)"
    }


def test_refusals_that_differ_every_time_are_split_only_until_the_batch_has_cost_max_calls_per_batch(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = with_call_budget(make_settings(batch_size=64), 10)
    databases.insert_rows("Users", 64)
    ids = users_in_key_order(64)
    url = settings.endpoint_url("Users")
    api = ValidatingApiClient(refused_ids=ids)  # names the refused Ids: no two halves read alike

    report = run_sync("Users", settings=settings, api=api)

    assert len(api.calls(url)) <= 10
    assert report.rejected == 64 and databases.tracked_ids("Users") == set()
    reasons = {row["Reason"] for row in databases.rejected_rows()}
    assert "rejected by the API: HTTP 422 (not split further: rejections.max_calls_per_batch 10 reached)" in reasons


def test_a_413_is_split_whatever_the_halves_answer_until_they_are_small_enough_and_says_so(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(batch_size=8)
    databases.insert_rows("Users", 8)
    url = settings.endpoint_url("Users")
    too_large = '{"error": "payload too large"}'
    api = RecordingApiClient(
        scripted_answers=[ScriptedAnswer(url=url, call_number=1, times=3, status=413, body=too_large)]
    )

    report = run_sync("Users", settings=settings, api=api)

    assert api.call_sizes(url) == [8, 4, 4, 2, 2, 2, 2]
    assert (report.sent, report.rejected, report.failed) == (8, 0, 0)
    assert databases.tracked_ids("Users") == set(users_in_key_order(8))
    assert "HTTP 413 Payload Too Large for 8 records" in caplog.text
    assert "lower entities.Users.batch_size" in caplog.text


def test_a_single_record_refused_with_413_is_rejected_as_too_large_on_its_own(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=1)
    databases.insert_rows("Users", 1)
    url = settings.endpoint_url("Users")
    api = RecordingApiClient(scripted_answers=[ScriptedAnswer(url=url, call_number=1, status=413, body="too large")])

    report = run_sync("Users", settings=settings, api=api)

    (row,) = databases.rejected_rows()
    assert report.rejected == 1
    assert (
        row["Reason"] == "rejected by the API: HTTP 413 Payload Too Large: this record alone is too large for the API"
    )
