"""The HTTP source: an entity read from a paginated GET endpoint page by page, in each paginator style,
every page through the retry loop, stopping where the API ends and never looping where it misbehaves.

Against the demo receiver on 127.0.0.1 through the real transport; the answers no well-behaved API
gives (a relative or repeated next link, a body that is not JSON) come from the scripted API.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.engine.http.api import ApiResponse
from sync_pipeline.engine.http.auth import ApiKeyHeader
from sync_pipeline.engine.http.retry import Attempt, RetryPolicy
from sync_pipeline.engine.http.transport import Transport
from sync_pipeline.engine.sources.http_pages import HttpPagesSource
from sync_pipeline.engine.sources.sql_table import SourcePage, SourceRefused, SourceUnavailable, UnreadableRow
from sync_pipeline.specs.model import Field, FieldType, Pagination

from .scripted_api import Answer, ScriptedApi
from .test_http_client import closed_port

API_KEY = "sk-pull-7c41d2-DO-NOT-LOG"
COLLECTION = "workers"
FIELDS = (
    Field("workerId", FieldType.GUID),
    Field("name", FieldType.TEXT),
    Field("hours", FieldType.DECIMAL),
    Field("updated_at", FieldType.DATETIME),
    Field("active", FieldType.BOOL),
)
FAST_RETRIES = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)
JANUARY = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

STYLES = {
    "page_number": Pagination("page_number", page_size=100, records_path="data"),
    "offset": Pagination("offset", page_size=100, records_path="data", size_param="limit"),
    "next_link": Pagination("next_link", page_size=100, records_path="data"),
    "cursor": Pagination(
        "next_link", page_size=100, records_path="data", next_path="next_cursor", cursor_param="cursor"
    ),
}


def worker_id(number: int) -> str:
    """The key of worker `number`: the same in every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"workers/{number}"))


def worker(number: int, **edits: Any) -> dict[str, Any]:
    """Worker `number` as the API holds it, updated `number` hours into 2026, with `edits` applied."""
    updated = (JANUARY + dt.timedelta(hours=number)).isoformat().replace("+00:00", "Z")
    return {
        "workerId": worker_id(number),
        "name": f"Worker {number}",
        "hours": 1.5,
        "updated_at": updated,
        "active": number % 2 == 0,
        **edits,
    }


def row(number: int) -> list[Any]:
    """Worker `number` as the source yields it: in field order, typed as a driver would return it."""
    return [worker_id(number), f"Worker {number}", 1.5, JANUARY + dt.timedelta(hours=number), number % 2 == 0]


@pytest.fixture
def receiver() -> Iterator[ReceivingApi]:
    """The receiving API on a free port of 127.0.0.1."""
    with ReceivingApi(API_KEY) as api:
        yield api


@pytest.fixture
def scripted() -> Iterator[ScriptedApi]:
    """An API on 127.0.0.1 answering as each test scripts it."""
    with ScriptedApi() as api:
        yield api


@pytest.fixture
def attempts() -> list[Attempt]:
    """Every attempt the source reported, as the caller would audit them."""
    return []


def source(
    url: str,
    pagination: Pagination,
    attempts: list[Attempt],
    key: str = API_KEY,
    since: tuple[str, str] | None = None,
) -> HttpPagesSource:
    """The workers source at `url`, through the real transport with `key`, never really sleeping."""
    transport = Transport(ApiKeyHeader("X-API-Key", key), timeout_seconds=5.0)
    return HttpPagesSource(
        url,
        pagination,
        FIELDS,
        "workerId",
        lambda page_url: transport.request("GET", page_url),
        attempts.append,
        since=since,
        retry=FAST_RETRIES,
        sleep=lambda seconds: None,
    )


def rows_of(pages: list[SourcePage]) -> list[list[Any]]:
    """Every row read, page after page, in order."""
    return [list(row) for page in pages for row in page.rows]


def list_calls(receiver: ReceivingApi) -> list[dict[str, str]]:
    """The query of each GET the collection received, as parameters."""
    calls = zip(receiver.collections.methods(COLLECTION), receiver.collections.queries[COLLECTION], strict=True)
    return [dict(urllib.parse.parse_qsl(query)) for (method, _, _), query in calls if method == "GET"]


# Each style, and where it stops.


@pytest.mark.parametrize("style", STYLES)
def test_each_style_reads_250_records_in_three_pages_of_100_100_and_50(
    style: str, receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(COLLECTION, map(worker, range(250)))

    pages = list(source(receiver.records_url(COLLECTION), STYLES[style], attempts).pages())

    assert [len(page.rows) for page in pages] == [100, 100, 50]
    assert rows_of(pages) == list(map(row, range(250)))
    assert len(list_calls(receiver)) == 3
    assert [attempt.response.status_code for attempt in attempts if attempt.response] == [200, 200, 200]


@pytest.mark.parametrize(
    ("style", "positions"),
    [
        ("page_number", [{"page": "1"}, {"page": "2"}, {"page": "3"}]),
        ("offset", [{"offset": "0"}, {"offset": "100"}, {"offset": "200"}]),
    ],
)
def test_page_number_and_offset_send_their_position_and_size_and_stop_on_the_short_page(
    style: str, positions: list[dict[str, str]], receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(COLLECTION, map(worker, range(250)))
    size = {STYLES[style].size_param or "": "100"}

    list(source(receiver.records_url(COLLECTION), STYLES[style], attempts).pages())

    assert list_calls(receiver) == [{**size, **position} for position in positions]


@pytest.mark.parametrize(("style", "requests"), [("page_number", 3), ("offset", 3), ("next_link", 2), ("cursor", 2)])
def test_a_full_last_page_ends_the_read_after_one_empty_page_or_a_missing_next_link(
    style: str, requests: int, receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(COLLECTION, map(worker, range(200)))

    pages = list(source(receiver.records_url(COLLECTION), STYLES[style], attempts).pages())

    assert [len(page.rows) for page in pages] == [100, 100]
    assert len(list_calls(receiver)) == requests


def test_an_empty_collection_is_one_request_and_no_page(receiver: ReceivingApi, attempts: list[Attempt]) -> None:
    assert list(source(receiver.records_url(COLLECTION), STYLES["page_number"], attempts).pages()) == []
    assert len(list_calls(receiver)) == 1


@pytest.mark.parametrize("style", ["page_number", "next_link"])
def test_the_since_filter_goes_with_every_page_and_only_records_updated_since_are_read(
    style: str, receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(COLLECTION, map(worker, range(400)))
    since = (JANUARY + dt.timedelta(hours=150)).isoformat()

    pages = list(
        source(receiver.records_url(COLLECTION), STYLES[style], attempts, since=("updated_since", since)).pages()
    )

    assert rows_of(pages) == list(map(row, range(150, 400)))
    calls = list_calls(receiver)
    assert len(calls) == 3
    assert all(call["updated_since"] == since for call in calls)


# Values: typed as a driver would type them, one bad record never blocking the others.


def test_timestamps_become_datetimes_and_decimal_text_a_decimal(
    receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(
        COLLECTION,
        [
            worker(0, updated_at="2026-03-01T08:30:00Z", hours="12.50"),
            worker(1, updated_at="2026-03-01T09:30:00+02:00"),
        ],
    )

    (page,) = list(source(receiver.records_url(COLLECTION), STYLES["page_number"], attempts).pages())

    (first, second) = page.rows
    assert first[2:4] == [decimal.Decimal("12.50"), dt.datetime(2026, 3, 1, 8, 30, tzinfo=dt.UTC)]
    assert second[3] == dt.datetime(2026, 3, 1, 7, 30, tzinfo=dt.UTC)


def test_a_timestamp_that_cannot_be_read_makes_its_record_unreadable_and_the_rest_goes_on(
    receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(
        COLLECTION, [worker(n, updated_at="yesterday") if n == 120 else worker(n) for n in range(250)]
    )

    pages = list(source(receiver.records_url(COLLECTION), STYLES["page_number"], attempts).pages())

    assert rows_of(pages) == [row(n) for n in range(250) if n != 120]
    assert [list(page.unreadable) for page in pages] == [
        [],
        [UnreadableRow(worker_id(120), "field updated_at: 'yesterday' is not an ISO-8601 date-time")],
        [],
    ]


def test_decimal_text_that_is_no_number_and_a_timestamp_given_as_a_number_are_unreadable(
    receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(COLLECTION, [worker(0, hours="lots"), worker(1, updated_at=1767225600), worker(2)])

    (page,) = list(source(receiver.records_url(COLLECTION), STYLES["page_number"], attempts).pages())

    assert page.rows == [row(2)]
    assert page.unreadable == [
        UnreadableRow(worker_id(0), "field hours: 'lots' is not a decimal number"),
        UnreadableRow(worker_id(1), "field updated_at: expected ISO-8601 text, got a JSON number"),
    ]


def test_a_missing_field_is_none_for_the_model_and_a_missing_key_counts_as_a_null_key(
    receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    without_name = {name: value for name, value in worker(0).items() if name != "name"}
    without_key = {name: value for name, value in worker(1).items() if name != "workerId"}
    receiver.collections.seed(COLLECTION, [without_name, without_key, worker(2, workerId=None)])

    (page,) = list(source(receiver.records_url(COLLECTION), STYLES["page_number"], attempts).pages())

    assert page.rows == [[worker_id(0), None, *row(0)[2:]]]
    assert (page.unreadable, page.null_keys) == ([], 2)


def test_an_item_that_is_not_an_object_is_unreadable_by_its_place_and_the_objects_go_on(
    scripted: ScriptedApi, attempts: list[Attempt]
) -> None:
    scripted.answers.append(Answer(body=f'[{{"workerId": "{worker_id(0)}"}}, [1, 2], "text"]'))
    pagination = Pagination("next_link", records_path="")

    (page,) = list(source(scripted.url("/workers"), pagination, attempts).pages())

    assert page.rows == [[worker_id(0), None, None, None, None]]
    assert page.unreadable == [
        UnreadableRow(None, "item 2 of page 1 is a JSON array, not an object"),
        UnreadableRow(None, "item 3 of page 1 is a JSON text, not an object"),
    ]


# Failures: retried while transient, then the entity stops with a reason that names the call.


def test_a_503_is_retried_and_every_attempt_reaches_the_hook(receiver: ReceivingApi, attempts: list[Attempt]) -> None:
    receiver.collections.seed(COLLECTION, map(worker, range(250)))
    receiver.fail_record_calls(COLLECTION, {2: 503})

    pages = list(source(receiver.records_url(COLLECTION), STYLES["page_number"], attempts).pages())

    assert rows_of(pages) == list(map(row, range(250)))
    assert [(a.number, a.response.status_code if a.response else None) for a in attempts] == [
        (1, 200),
        (1, 503),
        (2, 200),
        (1, 200),
    ]
    assert [call["page"] for call in list_calls(receiver)] == ["1", "2", "2", "3"]


def test_a_401_stops_the_read_at_once_naming_the_url_and_status_never_the_key(
    receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(COLLECTION, map(worker, range(10)))
    wrong_key = "sk-wrong-55aa-SECRET"

    with pytest.raises(SourceRefused) as raised:  # refused: another attempt later would be refused too
        list(source(receiver.records_url(COLLECTION), STYLES["page_number"], attempts, key=wrong_key).pages())

    message = str(raised.value)
    assert f"GET {receiver.records_url(COLLECTION)}?page_size=100&page=1 answered HTTP 401 after 1 attempt" in message
    assert "missing or wrong X-API-Key" in message
    assert wrong_key not in message and API_KEY not in message
    assert len(attempts) == 1


def test_a_503_on_every_attempt_stops_the_read_after_the_policy_s_attempts(
    receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.fail_record_calls(COLLECTION, {1: 503, 2: 503, 3: 503})

    with pytest.raises(SourceUnavailable, match="answered HTTP 503 after 3 attempts") as raised:
        list(source(receiver.records_url(COLLECTION), STYLES["page_number"], attempts).pages())
    assert len(attempts) == 3
    assert not isinstance(raised.value, SourceRefused)  # a passing cause: a later run may get through


def test_an_api_that_cannot_be_reached_stops_the_read_with_no_answer(attempts: list[Attempt]) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/records/{COLLECTION}"

    with pytest.raises(SourceUnavailable, match=r"GET .* no answer after 3 attempts: ConnectionError"):
        list(source(url, STYLES["page_number"], attempts).pages())
    assert all(attempt.unreachable for attempt in attempts)


def test_a_page_size_above_the_api_s_maximum_stops_with_the_api_s_reason(
    receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    pagination = Pagination("page_number", page_size=500, records_path="data")

    with pytest.raises(SourceUnavailable) as raised:
        list(source(receiver.records_url(COLLECTION), pagination, attempts).pages())
    assert "answered HTTP 400 after 1 attempt: " in str(raised.value)
    assert "page_size must be a whole number from 1 to 200, got '500'" in str(raised.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<html>Sign in</html>", "answered HTTP 200 with a body that is not JSON: <html>Sign in</html>"),
        ('{"items": []}', "no list of records at pagination.records_path 'data', nothing instead"),
        ('{"data": {"id": 1}}', "no list of records at pagination.records_path 'data', a JSON object instead"),
    ],
)
def test_a_body_without_records_where_they_should_be_stops_the_read(
    body: str, reason: str, scripted: ScriptedApi, attempts: list[Attempt]
) -> None:
    scripted.answers.append(Answer(body=body))

    with pytest.raises(SourceUnavailable) as raised:
        list(source(scripted.url("/workers"), STYLES["next_link"], attempts).pages())
    assert reason in str(raised.value)


# Guards: an API that does not page as declared is stopped, not read forever.


def test_an_api_that_ignores_the_page_param_stops_with_a_clear_error_after_two_requests(
    receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(COLLECTION, map(worker, range(250)))
    pagination = Pagination("page_number", page_size=100, records_path="data", page_param="pg")

    with pytest.raises(SourceUnavailable) as raised:
        list(source(receiver.records_url(COLLECTION), pagination, attempts).pages())

    assert "page_size=100&pg=2 answered the same 100 records as the page before" in str(raised.value)
    assert "the API ignores pagination.page_param 'pg'" in str(raised.value)
    assert len(list_calls(receiver)) == 2


def test_more_pages_than_max_pages_stops_naming_the_setting(receiver: ReceivingApi, attempts: list[Attempt]) -> None:
    receiver.collections.seed(COLLECTION, map(worker, range(250)))
    pagination = Pagination("offset", page_size=100, records_path="data", size_param="limit", max_pages=2)

    with pytest.raises(SourceUnavailable, match=r"more than pagination.max_pages \(2\) pages"):
        list(source(receiver.records_url(COLLECTION), pagination, attempts).pages())
    assert len(list_calls(receiver)) == 2


def test_a_relative_next_link_is_followed_from_the_request_url_and_a_link_seen_before_stops_the_read(
    scripted: ScriptedApi, attempts: list[Attempt]
) -> None:
    first = f'{{"data": [{{"workerId": "{worker_id(0)}"}}], "next": "/workers?after=1"}}'
    second = f'{{"data": [{{"workerId": "{worker_id(1)}"}}], "next": "/workers"}}'
    scripted.answers.extend([Answer(body=first), Answer(body=second)])
    pagination = Pagination("next_link", records_path="data", size_param=None)

    with pytest.raises(SourceUnavailable) as raised:
        list(source(scripted.url("/workers"), pagination, attempts).pages())
    assert f"the next link {scripted.url('/workers')} was already followed" in str(raised.value)
    assert [request.path for request in scripted.requests] == ["/workers", "/workers?after=1"]


def test_a_next_link_that_drops_the_since_filter_gets_it_back_and_one_that_keeps_it_is_followed_as_written(
    scripted: ScriptedApi, attempts: list[Attempt]
) -> None:
    first = f'{{"data": [{{"workerId": "{worker_id(0)}"}}], "next": "/workers?after=1"}}'
    second = f'{{"data": [{{"workerId": "{worker_id(1)}"}}], "next": "/workers?updated_since=2026-01-01&after=2"}}'
    scripted.answers.extend([Answer(body=first), Answer(body=second), Answer(body='{"data": [], "next": null}')])
    pagination = Pagination("next_link", records_path="data", size_param=None)

    list(source(scripted.url("/workers"), pagination, attempts, since=("updated_since", "2026-01-01")).pages())

    assert [request.path for request in scripted.requests] == [
        "/workers?updated_since=2026-01-01",
        "/workers?after=1&updated_since=2026-01-01",
        "/workers?updated_since=2026-01-01&after=2",
    ]


# The total, and what the source says it reads.


def test_the_total_comes_from_the_first_page_read_or_one_request_of_its_own(
    receiver: ReceivingApi, attempts: list[Attempt]
) -> None:
    receiver.collections.seed(COLLECTION, map(worker, range(250)))
    pagination = Pagination("page_number", page_size=100, records_path="data", total_path="total")
    since = ("updated_since", (JANUARY + dt.timedelta(hours=50)).isoformat())

    assert source(receiver.records_url(COLLECTION), pagination, attempts, since=since).count() == 200
    assert len(list_calls(receiver)) == 1
    read_first = source(receiver.records_url(COLLECTION), pagination, attempts)
    list(read_first.pages())
    assert read_first.count() == 250
    assert len(list_calls(receiver)) == 1 + 3


def test_a_total_that_is_no_count_is_refused_naming_the_setting(scripted: ScriptedApi, attempts: list[Attempt]) -> None:
    scripted.answers.append(Answer(body='{"data": [], "total": "lots"}'))
    pagination = Pagination("page_number", records_path="data", total_path="total")

    with pytest.raises(SourceUnavailable) as raised:
        source(scripted.url("/workers"), pagination, attempts).count()
    assert "pagination.total_path 'total' holds 'lots', not a count of records" in str(raised.value)


def test_without_a_total_path_there_is_no_count_and_no_request(receiver: ReceivingApi, attempts: list[Attempt]) -> None:
    assert source(receiver.records_url(COLLECTION), STYLES["page_number"], attempts).count() is None
    assert list_calls(receiver) == []


def test_describe_names_the_url_the_style_and_the_page_size(attempts: list[Attempt]) -> None:
    described = source("https://api.example.com/workers", STYLES["offset"], attempts).describe()

    assert described == "GET https://api.example.com/workers (offset, 100 per page)"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"style": "pages"}, "pagination.style: 'pages' is not one of page_number, offset, next_link"),
        ({"style": "offset", "page_size": 0}, "pagination.page_size: 0 is not allowed; a whole number of at least 1"),
        ({"style": "offset", "max_pages": 0}, "pagination.max_pages: 0 is not allowed"),
        ({"style": "page_number", "size_param": None}, "pagination.size_param: required for style page_number"),
    ],
)
def test_a_pagination_that_cannot_work_is_refused_naming_the_setting(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Pagination(**options)


# The receiver's list endpoint, as a real API: auth, bounds and a bad filter.


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("page_size=201", 400, "page_size must be a whole number from 1 to 200, got '201'"),
        ("limit=0", 400, "limit must be a whole number from 1 to 200, got '0'"),
        ("updated_since=yesterday", 400, "updated_since must be an ISO-8601 date-time, got 'yesterday'"),
        ("page=1&offset=0", 400, "give at most one of page, offset, cursor, got page, offset"),
        ("cursor=bogus", 400, "cursor 'bogus' is not one this API gave"),
    ],
)
def test_the_receiver_refuses_a_list_request_it_cannot_answer_naming_the_parameter(
    query: str, status: int, error: str, receiver: ReceivingApi
) -> None:
    transport = Transport(ApiKeyHeader("X-API-Key", API_KEY))

    response = transport.request("GET", f"{receiver.records_url(COLLECTION)}?{query}")

    assert (response.status_code, response.body) == (status, f'{{"error": "{error}"}}')


def test_the_receiver_lists_nothing_without_the_key(receiver: ReceivingApi) -> None:
    receiver.collections.seed(COLLECTION, [worker(0)])

    response = Transport(ApiKeyHeader("X-API-Key", "wrong")).request("GET", receiver.records_url(COLLECTION))

    assert response.status_code == 401
    assert worker_id(0) not in response.body


def test_records_posted_and_seeded_are_listed_in_the_order_they_were_stored(receiver: ReceivingApi) -> None:
    transport = Transport(ApiKeyHeader("X-API-Key", API_KEY))
    transport.request("POST", receiver.records_url(COLLECTION), body=b'{"workerId": "a"}')
    receiver.collections.seed(COLLECTION, [{"workerId": "b"}, {"workerId": "c"}])

    response = transport.request("GET", f"{receiver.records_url(COLLECTION)}?page_size=2")

    listed = json.loads(response.body)
    assert [record["workerId"] for record in listed["data"]] == ["a", "b"]
    assert listed["total"] == 3
    assert listed["next"].startswith(f"{receiver.records_url(COLLECTION)}?page_size=2&cursor=")


def test_the_retry_queue_is_read_by_key_without_the_since_filter_its_records_are_behind(
    attempts: list[Attempt],
) -> None:
    asked: list[dict[str, str]] = []

    def get(url: str) -> ApiResponse:
        asked.append(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)))
        return ApiResponse(200, json.dumps({"data": [worker(1)]}), content_type="application/json")

    keyed = HttpPagesSource(
        "http://127.0.0.1:9/workers",
        Pagination("page_number", page_size=2, records_path="data"),
        FIELDS,
        "workerId",
        get,
        attempts.append,
        params={"team": "north"},
        since=("updated_since", "2026-01-02T00:00:00+00:00"),
        key_param="ids",
    )

    assert keyed.reads_by_key
    assert rows_of(list(keyed.by_keys([worker_id(1), worker_id(2), worker_id(3)]))) == [row(1), row(1)]
    assert asked == [
        {"team": "north", "ids": f"{worker_id(1)},{worker_id(2)}", "page_size": "2", "page": "1"},
        {"team": "north", "ids": worker_id(3), "page_size": "2", "page": "1"},
    ]
    list(keyed.pages())
    assert asked[-1]["updated_since"] == "2026-01-02T00:00:00+00:00", "the cursor's own read keeps its filter"
