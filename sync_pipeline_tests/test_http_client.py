"""The real HTTP client against the receiving API on 127.0.0.1: headers, Retry-After, and how a call can fail."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import socket
import time
import traceback
from collections.abc import Iterator
from typing import Literal

import dagster as dg
import pytest

from sync_pipeline.demo.receiver import Fault, ReceivingApi
from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.entity_sync import EntitySyncReport, sync_entity
from sync_pipeline.engine.http.api import ApiCallFailed, ApiUnreachable
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.orchestration.sync_assets import delivery_policy, entity_plan
from sync_pipeline.resources.api_client import HttpSyncApiClient
from sync_pipeline.settings import Settings, parse_settings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC

from .conftest import SyncDatabases, entity_id, raw_default_settings

API_KEY = "sk-live-7f3c9e1d-DO-NOT-LOG"
KEY_HEADER = "X-Tamhr-Token"
BODY = b'[{"Id":"0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9","Name":"Siti"}]'
USERS = ENTITIES_BY_NAME["Users"]


@pytest.fixture
def receiver() -> Iterator[ReceivingApi]:
    """The receiving API on a free port of 127.0.0.1, expecting the key in `KEY_HEADER`."""
    with ReceivingApi(API_KEY, api_key_header=KEY_HEADER) as api:
        yield api


def client(timeout_seconds: float = 5.0, api_key_header: str = KEY_HEADER) -> HttpSyncApiClient:
    """The real client, configured as the resource would be from the settings."""
    return HttpSyncApiClient(api_key=API_KEY, api_key_header=api_key_header, timeout_seconds=timeout_seconds)


def exception_text(exc: BaseException) -> str:
    """Everything a log would show of an exception: message, repr and the whole formatted chain."""
    return f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(exc))}"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_batch_is_posted_with_the_key_in_the_configured_header_and_its_idempotency_key(
    receiver: ReceivingApi,
) -> None:
    response = client().post_batch(receiver.base_url + "users", BODY, "key-123")

    assert (response.status_code, response.is_2xx) == (200, True)
    assert receiver.log.received("users") == 1
    assert receiver.log.idempotency_keys["users"] == ["key-123"]


def test_a_redirect_is_not_followed_so_the_key_never_reaches_another_server(receiver: ReceivingApi) -> None:
    with ReceivingApi(API_KEY, api_key_header=KEY_HEADER) as elsewhere:
        receiver.fail_calls("users", {1: Fault(307, {"Location": elsewhere.base_url + "users"})})

        response = client().post_batch(receiver.base_url + "users", BODY, "key-123")

        assert (response.status_code, response.is_2xx) == (307, False)
        assert elsewhere.log.calls("users") == []


def test_the_key_sent_in_another_header_than_the_api_expects_is_refused_and_not_echoed(
    receiver: ReceivingApi,
) -> None:
    response = client(api_key_header="X-API-Key").post_batch(receiver.base_url + "users", BODY, "key-123")

    assert response.status_code == 401
    assert KEY_HEADER in response.body_excerpt
    assert API_KEY not in response.body_excerpt
    assert receiver.log.received("users") == 0


@pytest.mark.parametrize(
    "bad_key",
    [API_KEY + "\n", " " + API_KEY, API_KEY[:5] + "\r\n" + API_KEY[5:]],
    ids=["trailing newline", "leading space", "line break inside"],
)
def test_an_api_key_that_is_not_a_valid_header_value_is_refused_without_showing_it(
    receiver: ReceivingApi, bad_key: str
) -> None:
    """requests' own error for such a header quotes the value, and failed calls are logged."""
    api = HttpSyncApiClient(api_key=bad_key, api_key_header=KEY_HEADER)

    with pytest.raises(ValueError, match="api_key: not usable as an HTTP header value") as raised:
        api.post_batch(receiver.base_url + "users", BODY, "key-1")

    assert "SYNC_API_KEY" in str(raised.value)
    assert "DO-NOT-LOG" not in exception_text(raised.value)

    other = HttpSyncApiClient(api_key=bad_key, api_key_header=KEY_HEADER, api_key_env_var="CRM_API_TOKEN")
    with pytest.raises(ValueError, match="check the CRM_API_TOKEN environment variable"):
        other.post_batch(receiver.base_url + "users", BODY, "key-1")


def test_a_429_with_retry_after_in_seconds_gives_those_seconds(receiver: ReceivingApi) -> None:
    receiver.fail_calls("users", {1: Fault(429, {"Retry-After": "2"})})

    response = client().post_batch(receiver.base_url + "users", BODY, "key-123")

    assert (response.status_code, response.retry_after_seconds) == (429, 2)
    assert "injected" in response.body_excerpt


def test_a_retry_after_given_as_an_http_date_is_read_as_the_seconds_until_then(receiver: ReceivingApi) -> None:
    in_two_minutes = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    receiver.fail_calls("users", {1: Fault(503, {"Retry-After": email.utils.format_datetime(in_two_minutes, True)})})

    response = client().post_batch(receiver.base_url + "users", BODY, "key-123")

    assert response.status_code == 503
    assert response.retry_after_seconds is not None and 100 <= response.retry_after_seconds <= 120


def test_an_error_without_retry_after_has_none(receiver: ReceivingApi) -> None:
    receiver.fail_calls("users", {1: 502})

    response = client().post_batch(receiver.base_url + "users", BODY, "key-123")

    assert (response.status_code, response.retry_after_seconds) == (502, None)


def test_a_malformed_retry_after_is_ignored_rather_than_breaking_the_call(receiver: ReceivingApi) -> None:
    # "²" is one latin-1 byte: a header can carry it, and str.isdigit() says it is a digit.
    receiver.fail_calls("users", {1: Fault(429, {"Retry-After": "\u00b2"})})

    response = client().post_batch(receiver.base_url + "users", BODY, "key-123")

    assert (response.status_code, response.retry_after_seconds) == (429, None)


def test_an_answer_that_hangs_past_the_timeout_is_a_failed_call_not_an_unreachable_api(
    receiver: ReceivingApi,
) -> None:
    receiver.fail_calls("users", {1: Fault(action="hang", seconds=1.5)})
    started = time.monotonic()

    with pytest.raises(ApiCallFailed) as raised:
        client(timeout_seconds=0.2).post_batch(receiver.base_url + "users", BODY, "key-123")

    assert time.monotonic() - started < 1.2, "gave up at the timeout, not when the server finally answered"
    assert not isinstance(raised.value, ApiUnreachable)
    assert API_KEY not in exception_text(raised.value)


def test_a_connection_reset_after_the_request_went_out_is_a_failed_call_not_an_unreachable_api(
    receiver: ReceivingApi,
) -> None:
    receiver.fail_calls("users", {1: Fault(action="reset")})

    with pytest.raises(ApiCallFailed) as raised:
        client().post_batch(receiver.base_url + "users", BODY, "key-123")

    assert not isinstance(raised.value, ApiUnreachable)
    assert API_KEY not in exception_text(raised.value)


def test_a_port_nobody_listens_on_is_an_unreachable_api() -> None:
    with pytest.raises(ApiUnreachable) as raised:
        client().post_batch(f"http://127.0.0.1:{closed_port()}/api/sync/users", BODY, "key-123")

    assert "127.0.0.1" in str(raised.value)
    assert API_KEY not in exception_text(raised.value)


def test_the_session_survives_a_reset_and_the_next_call_goes_through(receiver: ReceivingApi) -> None:
    api = client()
    receiver.fail_calls("users", {1: Fault(action="reset")})
    with pytest.raises(ApiCallFailed):
        api.post_batch(receiver.base_url + "users", BODY, "key-1")

    response = api.post_batch(receiver.base_url + "users", BODY, "key-2")

    assert response.status_code == 200
    assert receiver.log.idempotency_keys["users"] == ["key-1", "key-2"]


class KeptRecords(logging.Handler):
    """A log handler that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record."""
        self.records.append(record)


@pytest.mark.parametrize(("verify_tls", "warned"), [(False, True), (True, False)])
def test_turning_off_tls_verification_is_warned_about_when_the_resource_is_set_up(
    verify_tls: bool, warned: bool
) -> None:
    context = dg.build_init_resource_context()
    kept = KeptRecords()
    assert context.log is not None
    context.log.addHandler(kept)
    resource = HttpSyncApiClient(api_key=API_KEY, verify_tls=verify_tls)

    resource.setup_for_execution(context)
    resource.teardown_after_execution(context)

    warnings = [r.getMessage() for r in kept.records if r.levelno == logging.WARNING]
    assert any("verify_tls" in message and "NOT verified" in message for message in warnings) == warned
    assert all(API_KEY not in r.getMessage() for r in kept.records)


def receiver_settings(receiver: ReceivingApi) -> Settings:
    """The packaged defaults pointed at the receiver, with batches of 3 and tiny backoff."""
    raw = raw_default_settings()
    raw["api"].update(base_url=receiver.base_url, api_key_header=KEY_HEADER, timeout_seconds=0.3)
    raw["batch_size"] = 3
    raw["retries"] = {"max_attempts": 3, "initial_delay_seconds": 0.01, "max_delay_seconds": 3}
    return parse_settings(raw)


def sync_users_over_http(databases: SyncDatabases, settings: Settings, waits: list[float]) -> EntitySyncReport:
    """Sync Users through the real client, as the asset would, recording the waits instead of sleeping."""
    api = HttpSyncApiClient(
        api_key=API_KEY, api_key_header=settings.api.api_key_header, timeout_seconds=settings.api.timeout_seconds
    )
    return sync_entity(
        entity_plan(TAMHR_SYNC, USERS, settings),
        databases.source_engine("Users"),
        TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns())),
        api,
        logging.getLogger("sync_test"),
        owner="test-run",
        policy=delivery_policy(settings),
        sleep=waits.append,
    )


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault(429, {"Retry-After": "2"}), id="429 Retry-After 2"),
        pytest.param(Fault(503), id="503"),
        pytest.param(Fault(action="hang", seconds=1.0), id="hang past the timeout"),
        pytest.param(Fault(action="reset"), id="connection reset"),
    ],
)
def test_a_sync_over_http_retries_a_failed_call_with_the_same_idempotency_key_and_delivers_each_record_once(
    fault: Fault, receiver: ReceivingApi, databases: SyncDatabases, waits: list[float]
) -> None:
    settings = receiver_settings(receiver)
    databases.insert_rows("Users", 3)
    receiver.fail_calls("users", {1: fault})

    report = sync_users_over_http(databases, settings, waits)

    ids = sorted(str(entity_id(USERS, number)) for number in range(3))
    assert (report.sent, report.retries, report.stopped_because) == (3, 1, None)
    assert receiver.log.calls("users") == [3, 3]
    first_key, second_key = receiver.log.idempotency_keys["users"]
    assert first_key == second_key and len(first_key) == 64
    assert (receiver.log.received("users"), receiver.log.duplicates("users")) == (3, 0)
    assert databases.tracked_ids("Users") == set(ids)
    if fault.headers.get("Retry-After") == "2":
        assert waits == [2.0], "the API's Retry-After was waited"
    else:
        assert len(waits) == 1 and 0 <= waits[0] <= 0.01, "the first backoff is at most initial_delay_seconds"


def deadline_client(deadline: float) -> HttpSyncApiClient:
    """The real client with a per-read timeout no trickle trips and a short total deadline."""
    return HttpSyncApiClient(
        api_key=API_KEY, api_key_header=KEY_HEADER, timeout_seconds=2.0, call_deadline_seconds=deadline
    )


@pytest.mark.parametrize("action", ["slow_body", "slow_headers"])
def test_an_answer_trickling_one_byte_at_a_time_is_cut_at_the_call_deadline(
    action: Literal["slow_body", "slow_headers"], receiver: ReceivingApi
) -> None:
    """Each byte comes well within the per-read timeout, so only the whole-call deadline can end it."""
    receiver.fail_calls("users", {1: Fault(action=action, seconds=4.0)})
    started = time.monotonic()

    with pytest.raises(ApiCallFailed, match=r"within api.call_deadline_seconds \(0.5 s\)") as raised:
        deadline_client(0.5).post_batch(receiver.base_url + "users", BODY, "key-123")

    assert time.monotonic() - started < 3.0, "gave up at the deadline, not when the trickle ended"
    assert not isinstance(raised.value, ApiUnreachable)


def test_a_call_that_ends_within_the_deadline_is_answered_as_usual(receiver: ReceivingApi) -> None:
    receiver.fail_calls("users", {1: Fault(action="slow_body", seconds=0.3)})

    response = deadline_client(5.0).post_batch(receiver.base_url + "users", BODY, "key-123")

    assert (response.status_code, response.content_type, response.body) == (
        200,
        "application/json",
        '{"received": "slowly"}',
    )


@pytest.mark.parametrize("status", [401, 400])
def test_a_receiver_that_echoes_the_api_key_in_its_error_body_never_hands_it_on(
    status: int, receiver: ReceivingApi
) -> None:
    receiver.fail_calls("users", {1: Fault(status, echo_headers=True)})

    response = client().post_batch(receiver.base_url + "users", BODY, "key-123")

    assert response.status_code == status
    assert API_KEY not in response.body
    assert f'"{KEY_HEADER}": "[redacted]"' in response.body


def test_a_receiver_that_json_escapes_the_echoed_key_gets_it_redacted_all_the_same() -> None:
    key = "Ab3+x9/Qz=="  # base64 keys hold `+` and `/`, which .NET and PHP JSON writers escape
    escaped = '{"error": "bad key Ab3\\u002Bx9\\/Qz\\u003d="}'
    keyed = HttpSyncApiClient(api_key=key, api_key_header=KEY_HEADER, timeout_seconds=5.0)
    with ReceivingApi(key, api_key_header=KEY_HEADER) as receiver:
        receiver.fail_calls("users", {1: Fault(401, body=escaped)})
        response = keyed.post_batch(receiver.base_url + "users", BODY, "key-123")

    assert json.loads(escaped)["error"] == f"bad key {key}", "the body really carries the key"
    assert key not in json.dumps(json.loads(response.body), ensure_ascii=False)
    assert response.body == '{"error": "bad key [redacted]"}'


def test_a_200_html_page_comes_back_with_its_content_type_for_the_engine_to_judge(receiver: ReceivingApi) -> None:
    receiver.fail_calls("users", {1: Fault(200, body="<html>Sign in</html>", content_type="text/html")})

    response = client().post_batch(receiver.base_url + "users", BODY, "key-123")

    assert (response.status_code, response.content_type, response.body) == (200, "text/html", "<html>Sign in</html>")
