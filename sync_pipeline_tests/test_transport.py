"""The transport every HTTP call goes through, on a real HTTP API on 127.0.0.1: auth per request,
a refresh on 401, the client-side rate limit, pulls as well as pushes, failures told apart by type."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import requests
import urllib3

from sync_pipeline.engine.http.api import ApiCallFailed, ApiUnreachable
from sync_pipeline.engine.http.auth import ApiKeyHeader, BasicCredentials, BearerToken
from sync_pipeline.engine.http.rate_limit import RateLimiter
from sync_pipeline.engine.http.transport import Transport, failure_kind
from sync_pipeline.orchestration.resources import build_resources
from sync_pipeline.resources.api_client import HttpSyncApiClient
from sync_pipeline.settings import SettingsError, parse_settings
from sync_pipeline.specs.tamhr import TAMHR_SYNC

from .conftest import raw_default_settings
from .scripted_api import Answer, ScriptedApi

API_KEY = "sk-live-7f3c9e1d-DO-NOT-LOG"
TOKEN = "eyJhbGciOi.DO-NOT-LOG.token+/="
BODY = b'[{"Id":"0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"}]'


@pytest.fixture
def scripted() -> Iterator[ScriptedApi]:
    """A scripted API; a test appends its answers to `answers`."""
    with ScriptedApi() as api:
        yield api


class RenewableToken:
    """A bearer token that a refresh replaces with a new one, as OAuth2 client credentials will."""

    def __init__(self) -> None:
        self.issued = 1
        self.refused: list[Mapping[str, str]] = []

    def headers(self) -> Mapping[str, str]:
        """The token in force."""
        return {"Authorization": f"Bearer token-{self.issued}"}

    def secrets(self) -> tuple[str, ...]:
        """Every token issued so far."""
        return tuple(f"token-{n}" for n in range(1, self.issued + 1))

    def refresh(self, refused: Mapping[str, str]) -> bool:
        """Issue the next token if `refused` is the one in force."""
        self.refused.append(dict(refused))
        if refused == self.headers():
            self.issued += 1
        return True


class FakeClock:
    """Time that passes only when slept: the waits are recorded, never spent."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.waits: list[float] = []

    def now(self) -> float:
        """The fake monotonic time."""
        return self.seconds

    def sleep(self, seconds: float) -> None:
        """Record the wait and let that much time pass."""
        self.waits.append(seconds)
        self.seconds += seconds


# Auth: the right header per kind, and the credential never shown.


@pytest.mark.parametrize(
    ("auth", "header", "value", "absent"),
    [
        pytest.param(ApiKeyHeader("X-Tamhr-Token", API_KEY), "X-Tamhr-Token", API_KEY, "Authorization", id="key"),
        pytest.param(BearerToken(TOKEN), "Authorization", f"Bearer {TOKEN}", "X-API-Key", id="bearer"),
    ],
)
def test_each_auth_kind_puts_its_credential_in_its_own_header_of_every_request(
    auth: ApiKeyHeader | BearerToken, header: str, value: str, absent: str, scripted: ScriptedApi
) -> None:
    transport = Transport(auth)

    transport.request("POST", scripted.url("/users"), body=BODY)
    transport.request("GET", scripted.url("/workflows"))

    assert [request.headers.get(header) for request in scripted.requests] == [value, value]
    assert all(absent not in request.headers for request in scripted.requests)


def test_a_pull_sends_its_query_parameters_and_no_body(scripted: ScriptedApi) -> None:
    scripted.answers.append(Answer(200, body='{"data": [1, 2]}'))

    response = Transport(BearerToken(TOKEN)).request(
        "GET", scripted.url("/workflows"), params={"page": "2", "page_length": "50"}
    )

    (request,) = scripted.requests
    assert (request.method, request.path, request.body) == ("GET", "/workflows?page=2&page_length=50", b"")
    assert "Content-Type" not in request.headers
    assert (response.status_code, response.body) == (200, '{"data": [1, 2]}')


@pytest.mark.parametrize("auth_kind", ["api_key_header", "bearer"])
def test_the_resource_sends_the_key_as_its_auth_kind_says(auth_kind: str, scripted: ScriptedApi) -> None:
    client = HttpSyncApiClient(api_key=API_KEY, api_key_header="X-Tamhr-Token", auth_kind=auth_kind)

    client.post_batch(scripted.url("/users"), BODY, "key-1")

    (request,) = scripted.requests
    sent = request.headers.get("X-Tamhr-Token") if auth_kind == "api_key_header" else request.headers["Authorization"]
    assert sent == (API_KEY if auth_kind == "api_key_header" else f"Bearer {API_KEY}")
    assert request.headers["Idempotency-Key"] == "key-1"


def test_a_bearer_token_is_never_logged_nor_handed_on_when_the_api_echoes_it(
    scripted: ScriptedApi, caplog: pytest.LogCaptureFixture
) -> None:
    escaped = json.dumps({"Authorization": f"Bearer {TOKEN}"}).replace("+", "\\u002B").replace("/", "\\/")
    scripted.answers += [Answer(401, body=escaped), Answer(action="reset")]
    transport = Transport(BearerToken(TOKEN))

    with caplog.at_level(logging.DEBUG):
        response = transport.request("GET", scripted.url("/workflows"))
        with pytest.raises(ApiCallFailed) as raised:
            transport.request("GET", scripted.url("/workflows"))

    assert json.loads(escaped)["Authorization"] == f"Bearer {TOKEN}", "the body really carries the token"
    assert response.body == '{"Authorization": "Bearer [redacted]"}'
    assert TOKEN not in f"{raised.value!r} {caplog.text}"
    assert caplog.records, "the libraries did log the calls"


def test_a_password_with_a_quote_and_a_backslash_is_cut_out_of_an_answer_that_json_escapes_it(
    scripted: ScriptedApi,
) -> None:
    password = 'pa"ss\\word-DO-NOT-LOG'
    echoed = json.dumps({"fault": {"password": password}})
    scripted.answers += [Answer(500, body=echoed)]

    response = Transport(BasicCredentials("chr-sync", password)).request("POST", scripted.url("/CustomerManager"))

    assert json.loads(echoed)["fault"]["password"] == password and password not in echoed, "escaped in the body"
    assert response.body == '{"fault": {"password": "[redacted]"}}'


# A 401 with an auth that can refresh: refreshed once, sent once more.


def test_a_401_with_a_refreshable_auth_gets_a_new_credential_and_the_call_is_sent_again(
    scripted: ScriptedApi,
) -> None:
    scripted.answers.append(Answer(401, body='{"error": "token expired"}'))
    auth = RenewableToken()

    response = Transport(auth).request("POST", scripted.url("/users"), body=BODY)

    assert response.status_code == 200
    assert [request.headers["Authorization"] for request in scripted.requests] == ["Bearer token-1", "Bearer token-2"]
    assert auth.refused == [{"Authorization": "Bearer token-1"}]
    assert scripted.requests[0].body == scripted.requests[1].body == BODY


def test_a_second_401_after_the_refresh_is_the_answer_of_the_call(scripted: ScriptedApi) -> None:
    scripted.answers += [Answer(401), Answer(401, body='{"error": "still not allowed"}')]
    auth = RenewableToken()

    response = Transport(auth).request("POST", scripted.url("/users"), body=BODY)

    assert (response.status_code, response.body) == (401, '{"error": "still not allowed"}')
    assert len(scripted.requests) == 2, "refreshed once, not again"
    assert len(auth.refused) == 1


def test_a_401_with_a_fixed_key_is_the_answer_at_once(scripted: ScriptedApi) -> None:
    scripted.answers.append(Answer(401))

    response = Transport(ApiKeyHeader("X-API-Key", API_KEY)).request("POST", scripted.url("/users"), body=BODY)

    assert response.status_code == 401
    assert len(scripted.requests) == 1


# The client-side rate limit.


def rate_limit_waits(scripted: ScriptedApi, headers: dict[str, str], calls: int, max_wait: float = 60.0) -> list[float]:
    """The waits of `calls` calls through one transport, the first answered with `headers`, on a fake clock."""
    scripted.answers.append(Answer(200, headers))
    clock = FakeClock()
    transport = Transport(BearerToken(TOKEN), rate_limit=RateLimiter(max_wait, sleep=clock.sleep, clock=clock.now))
    for _ in range(calls):
        transport.request("GET", scripted.url("/workflows"))
    assert len(scripted.requests) == calls
    return clock.waits


@pytest.mark.parametrize(
    "headers",
    [
        {"RateLimit-Remaining": "0", "RateLimit-Reset": "2"},
        {"ratelimit-remaining": "0", "ratelimit-reset": "2", "RateLimit-Limit": "100"},
    ],
    ids=["as the draft writes them", "lower case"],
)
def test_an_answer_leaving_no_request_in_the_window_makes_the_next_call_wait_until_the_reset(
    headers: dict[str, str], scripted: ScriptedApi
) -> None:
    waits = rate_limit_waits(scripted, headers, calls=3)

    assert waits == [2.0], "the second call waited for the reset, the third found the new window"


def test_the_rate_limit_wait_is_bounded_by_its_maximum(scripted: ScriptedApi) -> None:
    headers = {"RateLimit-Remaining": "0", "RateLimit-Reset": "3600"}

    assert rate_limit_waits(scripted, headers, calls=2, max_wait=5.0) == [5.0]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"RateLimit-Remaining": "3", "RateLimit-Reset": "2"}, id="requests left"),
        pytest.param({}, id="no rate-limit headers"),
        pytest.param({"RateLimit-Remaining": "none", "RateLimit-Reset": "2"}, id="malformed"),
    ],
)
def test_an_answer_that_leaves_requests_in_the_window_does_not_hold_the_next_call(
    headers: dict[str, str], scripted: ScriptedApi
) -> None:
    assert rate_limit_waits(scripted, headers, calls=2) == []


# Failures told apart by type, whatever their message says.


def exhausted(reason: Exception) -> urllib3.exceptions.MaxRetryError:
    """urllib3's wrapper of a connection that could not be made."""
    return urllib3.exceptions.MaxRetryError(None, "/api/sync/users", reason)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        pytest.param(
            requests.ConnectionError(urllib3.exceptions.ProtocolError("peer went away", ConnectionResetError(104))),
            ApiCallFailed,
            id="dropped after sending, a message without 'Connection aborted'",
        ),
        pytest.param(
            requests.ConnectionError(
                urllib3.exceptions.ProtocolError("gone", http.client.RemoteDisconnected("closed"))
            ),
            ApiCallFailed,
            id="closed without an answer",
        ),
        pytest.param(
            requests.ConnectionError(
                exhausted(urllib3.exceptions.NewConnectionError(None, "Connection aborted: RemoteDisconnected"))
            ),
            ApiUnreachable,
            id="refused, with a message that reads like a dropped call",
        ),
        pytest.param(requests.ConnectTimeout(exhausted(TimeoutError())), ApiUnreachable, id="connect timeout"),
        pytest.param(requests.exceptions.SSLError(exhausted(OSError("bad cert"))), ApiUnreachable, id="TLS"),
        pytest.param(requests.ReadTimeout("Connection aborted"), ApiCallFailed, id="read timeout"),
        pytest.param(urllib3.exceptions.ProtocolError("Connection broken"), ApiCallFailed, id="body cut off"),
    ],
)
def test_a_transport_error_is_classified_by_its_type_not_by_its_message(exc: Exception, kind: Any) -> None:
    assert failure_kind(exc) is kind


# Settings: the auth choice.


def test_the_default_auth_is_the_key_in_the_api_key_header_as_before() -> None:
    settings = parse_settings(raw_default_settings())

    client = build_resources(TAMHR_SYNC, settings)["sync_api"]

    assert settings.api.auth.kind == "api_key_header"
    assert isinstance(client, HttpSyncApiClient)
    assert (client.auth_kind, client.api_key_header) == ("api_key_header", "X-API-Key")


def test_bearer_auth_in_the_settings_reaches_the_resource() -> None:
    raw = raw_default_settings()
    del raw["api"]["api_key_header"]
    raw["api"]["auth"] = {"kind": "bearer"}
    raw["retries"] = {"max_delay_seconds": 20.0}

    client = build_resources(TAMHR_SYNC, parse_settings(raw))["sync_api"]

    assert isinstance(client, HttpSyncApiClient)
    assert (client.auth_kind, client.rate_limit_max_wait_seconds) == ("bearer", 20.0)


@pytest.mark.parametrize(
    ("auth", "named"),
    [
        pytest.param(
            {"kind": "digest"}, ["api.auth", "'digest'", "'api_key_header', 'bearer', 'basic'"], id="unknown kind"
        ),
        pytest.param({"kind": "bearer"}, ["api.api_key_header", "bearer", "remove it"], id="key header with bearer"),
    ],
)
def test_a_bad_auth_setting_is_refused_naming_the_setting(auth: dict[str, str], named: list[str]) -> None:
    raw = raw_default_settings()
    raw["api"]["auth"] = auth

    with pytest.raises(SettingsError) as raised:
        parse_settings(raw)

    assert all(part in str(raised.value) for part in named), str(raised.value)
