"""What counts as delivered: only the API's acknowledgement tracks records, never just any 2xx."""

from __future__ import annotations

import json

from sync_pipeline.engine.http.api import Acknowledgement, ApiResponse, NotAcknowledged, WholeBatch
from sync_pipeline.settings import AcknowledgementSettings, Settings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME

from .conftest import EntitySync, SettingsFactory, SyncDatabases, entity_id
from .fakes import MultiStatusApiClient, RecordingApiClient, ScriptedAnswer

USERS = ENTITIES_BY_NAME["Users"]
LOGIN_PAGE = "<!DOCTYPE html><html><body><form action='/login'>Please sign in</form></body></html>"


def users_in_key_order(count: int) -> list[str]:
    """The EntityIds of Users rows 0 .. count-1 in the order the source pages them (by Id)."""
    return sorted(str(entity_id(USERS, number)) for number in range(count))


def answering(url: str, status: int, body: str, content_type: str) -> RecordingApiClient:
    """A fake API that gives every call to `url` this answer."""
    return RecordingApiClient(
        scripted_answers=[
            ScriptedAnswer(url=url, call_number=1, times=100, status=status, body=body, content_type=content_type)
        ]
    )


def with_acknowledgement(settings: Settings, **acknowledgement: object) -> Settings:
    """The same settings with `api.acknowledgement` as given (validated as the YAML would be)."""
    ack = AcknowledgementSettings.model_validate(acknowledgement)
    return settings.model_copy(update={"api": settings.api.model_copy(update={"acknowledgement": ack})})


def test_a_200_whose_body_is_an_html_login_page_tracks_nothing_and_says_why(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings, waits: list[float]
) -> None:
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")
    api = answering(url, 200, LOGIN_PAGE, "text/html; charset=utf-8")

    report = run_sync("Users", api=api)

    assert databases.tracked_ids("Users") == set()
    assert (report.sent, report.failed, report.batches_ok, report.batches_failed) == (0, 3, 0, 1)
    (row,) = databases.scheduler_log_rows()
    assert row["Status"] == "Failure"
    assert row["ExceptionMessage"] == "HTTP 200 but not an acknowledgement: content type text/html"
    assert json.loads(row["AdditionalInformation"])["HttpResponseCode"] == 200
    assert len(api.calls(url)) == 1 and waits == [], "the same page would come back: not retried"
    assert not report.succeeded


def test_a_207_multi_status_is_not_taken_for_the_whole_batch_unless_results_are_configured(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    databases.insert_rows("Users", 4)
    api = MultiStatusApiClient(refused_ids=[users_in_key_order(4)[1]])

    report = run_sync("Users", settings=make_settings(batch_size=10), api=api)

    assert databases.tracked_ids("Users") == set()
    assert report.failed == 4
    (row,) = databases.scheduler_log_rows()
    assert row["ExceptionMessage"].startswith("HTTP 207 but not an acknowledgement")


def test_a_207_with_per_record_results_tracks_the_accepted_rejects_the_refused_and_leaves_the_unanswered(
    databases: SyncDatabases, run_sync: EntitySync, make_settings: SettingsFactory
) -> None:
    settings = with_acknowledgement(make_settings(batch_size=10), results={"path": "results", "accepted": [200, 201]})
    databases.insert_rows("Users", 4)
    ids = users_in_key_order(4)
    api = MultiStatusApiClient(refused_ids=[ids[1]], unanswered_ids=[ids[3]])

    report = run_sync("Users", settings=settings, api=api)

    assert databases.tracked_ids("Users") == {ids[0], ids[2]}
    assert (report.sent, report.rejected, report.failed) == (2, 1, 1)
    (rejection,) = databases.rejected_rows()
    assert (rejection["EntityId"], rejection["HttpResponseCode"]) == (ids[1], 207)
    assert json.loads(rejection["ResponseExcerpt"]) == {
        "Id": ids[1],
        "status": 422,
        "error": f"{ids[1]} fails validation",
    }
    assert len(api.calls(settings.endpoint_url("Users"))) == 1, "one call: no splitting, no retry"


def test_a_204_without_a_body_and_a_json_200_acknowledge_the_batch(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    databases.insert_rows("Users", 3)
    url = settings.endpoint_url("Users")

    report = run_sync("Users", api=answering(url, 204, "", ""))

    assert report.sent == 3 and databases.tracked_ids("Users") == set(users_in_key_order(3))


def test_the_content_types_that_acknowledge_are_a_setting() -> None:
    xml = Acknowledgement(content_types=frozenset({"application/json", "application/xml"}))
    answer = ApiResponse(200, "<ok/>", content_type="application/xml")

    assert isinstance(xml.judge(answer, ["1"]), WholeBatch)
    assert Acknowledgement().judge(answer, ["1"]) == NotAcknowledged(
        "HTTP 200 but not an acknowledgement: content type application/xml"
    )
    assert Acknowledgement().judge(ApiResponse(206, "{}", content_type="application/json"), ["1"]) == NotAcknowledged(
        "HTTP 206 but not an acknowledgement: 206 is not in api.acknowledgement.statuses"
    )
