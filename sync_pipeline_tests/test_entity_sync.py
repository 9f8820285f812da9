"""The engine syncing one entity: real SQLite databases, the fake API, no Dagster."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa

from sync_pipeline.settings import ProgressSettings, Settings
from sync_pipeline.specs.model import FieldType
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_ENTITIES

from .conftest import EntitySync, SettingsFactory, SyncDatabases, entity_id
from .fakes import RecordingApiClient, ScriptedAnswer

CANONICAL_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
USERS = ENTITIES_BY_NAME["Users"]


def users_ids(count: int, start: int = 0) -> list[str]:
    """The canonical EntityIds of Users rows `start` .. `start + count - 1`."""
    return [str(entity_id(USERS, number)) for number in range(start, start + count)]


def test_already_tracked_users_are_counted_and_not_sent_again(
    databases: SyncDatabases, run_sync: EntitySync, api: RecordingApiClient, settings: Settings
) -> None:
    databases.insert_rows("Users", 10)
    tracked_before = users_ids(4, start=3)
    databases.track("Users", tracked_before)

    report = run_sync("Users")

    sent = api.accepted_ids(settings.endpoint_url("Users"))
    assert sorted(sent) == sorted(set(users_ids(10)) - set(tracked_before))
    assert (report.rows_found, report.already_tracked, report.sent) == (10, 4, 6)
    assert databases.tracked_ids("Users") == set(users_ids(10))


def test_ten_thousand_users_go_out_as_three_full_batches_and_one_of_a_thousand(
    databases: SyncDatabases, run_sync: EntitySync, api: RecordingApiClient, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=3000)
    databases.insert_rows("Users", 10_000)

    report = run_sync("Users", settings=settings)

    url = settings.endpoint_url("Users")
    assert api.call_sizes(url) == [3000, 3000, 3000, 1000]
    assert sorted(api.accepted_ids(url)) == sorted(users_ids(10_000))
    assert (report.rows_found, report.sent, report.batches_ok, report.batches_failed) == (10_000, 10_000, 4, 0)
    assert report.succeeded


def test_an_acknowledged_batch_is_tracked_with_canonical_ids_and_logged_as_success(
    databases: SyncDatabases, run_sync: EntitySync, api: RecordingApiClient, make_settings: SettingsFactory
) -> None:
    settings = make_settings(
        batch_size=3, scheduler_log={"application_name": "TAMHR-QA", "ip_host_name": "etl-host-07", "log_id": "NIGHTLY"}
    )
    databases.insert_rows("Users", 7)
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    run_sync("Users", settings=settings)

    after = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    url = settings.endpoint_url("Users")
    tracking = databases.tracking_rows()
    assert sorted(row["EntityId"] for row in tracking) == sorted(api.accepted_ids(url)) == sorted(users_ids(7))
    assert all(CANONICAL_GUID.match(row["EntityId"]) for row in tracking)
    assert {row["EntityType"] for row in tracking} == {"Users"}

    log_rows = databases.scheduler_log_rows()
    assert sorted(json.loads(row["AdditionalInformation"])["BatchSize"] for row in log_rows) == [1, 3, 3]
    for row in log_rows:
        assert (row["ApplicationName"], row["IPHostName"], row["LogID"]) == ("TAMHR-QA", "etl-host-07", "NIGHTLY")
        details = json.loads(row["AdditionalInformation"])
        assert (row["Activity"], row["Status"], row["RowStatus"]) == ("Sync Batch: Users", "Success", True)
        assert {key: row[key] for key in settings.scheduler_log.columns()} == settings.scheduler_log.columns()
        assert details["EndpointUrl"] == url
        assert details["HttpResponseCode"] == 200
        assert isinstance(details["DurationMs"], int) and details["DurationMs"] >= 0
        assert row["ExceptionMessage"] is None
        assert before - dt.timedelta(seconds=1) <= row["CreatedOn"] <= after + dt.timedelta(seconds=1)


def test_a_batch_failing_on_every_attempt_is_logged_per_attempt_left_untracked_and_the_others_still_go(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    databases.insert_rows("Users", 9)
    url = settings.endpoint_url("Users")
    api = RecordingApiClient(
        scripted_answers=[ScriptedAnswer(url=url, call_number=2, times=3, status=500, body="database is down")]
    )

    report = run_sync("Users", api=api)

    calls = api.calls(url)
    assert [call.status for call in calls] == [200, 500, 500, 500, 200]
    assert len({call.idempotency_key for call in calls[1:4]}) == 1, "every attempt carries the same key"
    rejected = {record["Id"] for record in calls[1].records}
    assert databases.tracked_ids("Users") == set(users_ids(9)) - rejected
    assert (report.sent, report.failed, report.batches_ok, report.batches_failed) == (6, 3, 2, 1)
    assert not report.succeeded and report.stopped_because is None
    assert report.first_batch_error is not None and "500" in report.first_batch_error

    statuses = [row["Status"] for row in databases.scheduler_log_rows()]
    assert sorted(statuses) == ["Failure", "Failure", "Failure", "Success", "Success"]
    failures = [row for row in databases.scheduler_log_rows() if row["Status"] == "Failure"]
    assert sorted(json.loads(row["AdditionalInformation"])["Attempt"] for row in failures) == [1, 2, 3]
    failure = failures[0]
    assert "500" in failure["ExceptionMessage"] and "database is down" in failure["ExceptionMessage"]
    assert json.loads(failure["AdditionalInformation"])["HttpResponseCode"] == 500
    first_id, last_id = calls[1].records[0]["Id"], calls[1].records[-1]["Id"]
    assert f"Users: 3 records ({first_id}..{last_id}) failed after 3 attempt(s)" in caplog.text
    assert "HTTP 500: database is down" in caplog.text


def test_a_row_that_breaks_its_model_is_refused_naming_the_field_and_the_rest_of_its_batch_goes(
    databases: SyncDatabases, run_sync: EntitySync, api: RecordingApiClient, settings: Settings
) -> None:
    databases.insert_rows("Users", 9)
    bad_id = entity_id(USERS, 4)
    with databases.source_engine("Users").begin() as conn:  # SQLite keeps whatever it is given
        conn.execute(sa.text("UPDATE TB_M_USER SET IsActive = 'yes' WHERE Id = :id"), {"id": bad_id.hex})

    report = run_sync("Users")

    assert (report.sent, report.rejected, report.failed, report.batches_failed) == (8, 1, 0, 0)
    assert report.rejected_ids == [str(bad_id)] and not report.succeeded
    assert str(bad_id) not in databases.tracked_ids("Users")
    assert str(bad_id) not in api.accepted_ids(settings.endpoint_url("Users"))
    assert api.call_sizes(settings.endpoint_url("Users")) == [3, 3, 2]  # batches are filled from untracked rows
    (rejection,) = databases.rejected_rows()
    assert rejection["EntityId"] == str(bad_id) and rejection["HttpResponseCode"] is None
    assert "IsActive" in rejection["Reason"] and "expected an integer" in rejection["Reason"]
    assert [row["Status"] for row in databases.scheduler_log_rows()] == ["Success"] * 3


def test_a_second_run_sends_only_the_failed_batch_and_a_third_sends_nothing(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    databases.insert_rows("Users", 9)
    url = settings.endpoint_url("Users")
    first = RecordingApiClient(scripted_answers=[ScriptedAnswer(url=url, call_number=2, times=3, body="try later")])
    run_sync("Users", api=first)
    rejected = {record["Id"] for record in first.calls(url)[1].records}

    second, third = RecordingApiClient(), RecordingApiClient()
    second_report = run_sync("Users", api=second)
    third_report = run_sync("Users", api=third)

    assert set(second.accepted_ids(url)) == rejected and len(second.accepted_ids(url)) == 3
    assert (second_report.already_tracked, second_report.sent) == (6, 3)
    assert third.calls(url) == []
    assert (third_report.rows_found, third_report.already_tracked, third_report.sent) == (9, 9, 0)
    assert sorted(row["EntityId"] for row in databases.tracking_rows()) == sorted(users_ids(9))


def test_a_run_knows_the_tracked_count_and_its_candidates_from_its_snapshot_without_a_count_query(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    """The tracking table is counted by neither the progress total nor the tracked figure of the asset:
    at a million rows either COUNT costs a quarter of a second or more; the snapshot read anyway says it."""
    databases.insert_rows("Users", 10)
    databases.track("Users", users_ids(4, start=3))
    url = settings.endpoint_url("Users")
    api = RecordingApiClient(scripted_answers=[ScriptedAnswer(url=url, call_number=1, times=3, body="try later")])
    statements: list[str] = []
    sa.event.listen(databases.log, "before_cursor_execute", lambda *args: statements.append(args[2]))

    report = run_sync("Users", api=api)

    assert (report.candidates, report.sent, report.failed) == (6, 3, 3)
    assert report.tracked == len(databases.tracked_ids("Users")) == 7
    assert not [sql for sql in statements if "count(" in sql.lower() and "TB_R_SYNC_TRACKING" in sql]


def test_a_run_that_neither_counts_nor_reads_a_page_leaves_the_tracked_count_to_a_query(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    databases.track("Users", users_ids(2))
    silent = settings.model_copy(update={"progress": ProgressSettings(interval_seconds=0)})

    assert run_sync("Users", settings=silent).tracked is None


def test_an_unreachable_endpoint_stops_the_entity_after_its_attempts_each_logged(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    databases.insert_rows("Users", 9)
    url = settings.endpoint_url("Users")

    report = run_sync("Users", api=RecordingApiClient(unreachable_urls=[url]))

    assert report.stopped_because is not None and "unreachable" in report.stopped_because
    assert (report.sent, report.batches_ok, report.batches_failed, report.failed) == (0, 0, 1, 3)
    assert databases.tracking_rows() == []
    log_rows = databases.scheduler_log_rows()
    assert [row["Status"] for row in log_rows] == ["Failure"] * 3
    assert all("connection refused" in row["ExceptionMessage"] for row in log_rows)


def test_a_missing_source_table_stops_the_entity_naming_the_table_and_sends_nothing(
    databases: SyncDatabases, run_sync: EntitySync, api: RecordingApiClient, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=3, Users={"table": "TB_M_USER_GONE"})

    report = run_sync("Users", settings=settings)

    assert report.stopped_because is not None and "TB_M_USER_GONE" in report.stopped_because
    assert api.calls(settings.endpoint_url("Users")) == []
    assert (report.rows_found, report.sent) == (0, 0)
    assert databases.tracking_rows() == []


def expected_json(field_type: FieldType, value: object) -> object:
    """What a source value must look like after a JSON round trip, by field type."""
    if value is None:
        return None
    if field_type in (FieldType.GUID, FieldType.TEXT):
        return str(value)
    if field_type is FieldType.DATETIME:
        assert isinstance(value, dt.datetime)
        return value.isoformat()
    if field_type is FieldType.DECIMAL:
        return float(str(value))
    return value


def test_every_entity_is_sent_with_exactly_its_model_field_names_and_json_types(
    databases: SyncDatabases, run_sync: EntitySync, api: RecordingApiClient, settings: Settings
) -> None:
    json_types: dict[FieldType, type | tuple[type, ...]] = {
        FieldType.GUID: str,
        FieldType.TEXT: str,
        FieldType.INT: int,
        FieldType.DECIMAL: (int, float),
        FieldType.DATETIME: str,
        FieldType.BOOL: bool,
    }
    for spec in TAMHR_ENTITIES:
        (row,) = databases.insert_rows(spec.name, 1, start=1)

        run_sync(spec.name)

        (record,) = api.accepted_records(settings.endpoint_url(spec.name))
        assert list(record) == [field.name for field in spec.fields], spec.name
        for field in spec.fields:
            value = record[field.name]
            assert isinstance(value, json_types[field.type]), (spec.name, field.name, value)
            assert field.type in (FieldType.BOOL, FieldType.DECIMAL) or not isinstance(value, bool)
            assert value == expected_json(field.type, row[field.name]), (spec.name, field.name)
        assert CANONICAL_GUID.match(record["Id"])
