"""The one retry loop of every HTTP call, on a real HTTP API on 127.0.0.1: what is retried, how long
it waits, where it stops, and that the caller hears of every attempt (one audit row each)."""

from __future__ import annotations

import datetime as dt
import email.utils
import socket
from collections.abc import Iterator

import pytest

from sync_pipeline.engine.http.auth import ApiKeyHeader
from sync_pipeline.engine.http.retry import Attempt, RetryPolicy, call_with_retries
from sync_pipeline.engine.http.transport import Transport

from .scripted_api import Answer, ScriptedApi

API_KEY = "sk-live-7f3c9e1d-DO-NOT-LOG"
POLICY = RetryPolicy(max_attempts=5, initial_delay=0.5, max_delay=10.0, max_total_wait=60.0)


def statuses(attempts: list[Attempt]) -> list[int | None]:
    """The status each attempt got, None where no answer came."""
    return [None if attempt.response is None else attempt.response.status_code for attempt in attempts]


class Call:
    """One GET through the transport and the retry loop, keeping every attempt and every wait."""

    def __init__(self, url: str, policy: RetryPolicy = POLICY) -> None:
        self.attempts: list[Attempt] = []
        self.waits: list[float] = []
        self.events: list[str] = []
        transport = Transport(ApiKeyHeader("X-API-Key", API_KEY), timeout_seconds=5.0)
        try:
            self.last = call_with_retries(
                lambda: transport.request("GET", url, params={"page": "1"}), policy, self._attempted, self._wait
            )
        finally:
            transport.close()

    def _attempted(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        self.events.append(f"attempt {attempt.number}")

    def _wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.events.append("wait")


@pytest.fixture
def scripted() -> Iterator[ScriptedApi]:
    """A scripted API; a test appends its answers to `answers`."""
    with ScriptedApi() as api:
        yield api


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "answer",
    [
        *(pytest.param(Answer(status), id=str(status)) for status in (408, 429, 500, 502, 503, 504)),
        pytest.param(Answer(action="reset"), id="no answer (connection reset)"),
    ],
)
def test_a_transient_outcome_is_tried_again_after_a_backoff_and_the_next_answer_ends_the_call(
    answer: Answer, scripted: ScriptedApi
) -> None:
    scripted.answers.append(answer)

    call = Call(scripted.url("/workflows"))

    first = None if answer.action == "reset" else answer.status
    assert statuses(call.attempts) == [first, 200]
    assert call.last is call.attempts[-1] and call.last.number == 2
    assert len(call.waits) == 1 and 0 <= call.waits[0] <= POLICY.initial_delay
    assert [request.path for request in scripted.requests] == ["/workflows?page=1"] * 2


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 409, 413, 422])
def test_any_other_answer_ends_the_call_at_once(status: int, scripted: ScriptedApi) -> None:
    scripted.answers.append(Answer(status))

    call = Call(scripted.url("/workflows"))

    assert statuses(call.attempts) == [status]
    assert call.waits == []
    assert len(scripted.requests) == 1


def test_retry_after_in_seconds_is_waited_instead_of_the_backoff(scripted: ScriptedApi) -> None:
    scripted.answers += [Answer(429, {"Retry-After": "7"}), Answer(503, {"Retry-After": "3"})]

    call = Call(scripted.url("/workflows"))

    assert call.waits == [7.0, 3.0]
    assert statuses(call.attempts) == [429, 503, 200]


def test_retry_after_as_an_http_date_is_waited_until_that_time(scripted: ScriptedApi) -> None:
    in_eight_seconds = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=8)
    scripted.answers.append(Answer(503, {"Retry-After": email.utils.format_datetime(in_eight_seconds, usegmt=True)}))

    call = Call(scripted.url("/workflows"))

    (wait,) = call.waits
    assert 5.0 <= wait <= 8.0, "the seconds until the date (HTTP-dates are whole seconds)"
    assert statuses(call.attempts) == [503, 200]


def test_a_retry_after_longer_than_max_delay_ends_the_call_without_waiting(scripted: ScriptedApi) -> None:
    scripted.answers.append(Answer(429, {"Retry-After": "11"}))

    call = Call(scripted.url("/workflows"))

    assert call.waits == []
    assert statuses(call.attempts) == [429]


def test_a_call_is_tried_at_most_max_attempts_times(scripted: ScriptedApi) -> None:
    scripted.answers += [Answer(503)] * 10

    call = Call(scripted.url("/workflows"), RetryPolicy(max_attempts=3, initial_delay=0.1))

    assert statuses(call.attempts) == [503, 503, 503]
    assert len(call.waits) == 2
    assert len(scripted.requests) == 3


def test_retrying_stops_before_a_wait_that_would_pass_max_total_wait(scripted: ScriptedApi) -> None:
    scripted.answers += [Answer(503, {"Retry-After": "4"})] * 10

    call = Call(scripted.url("/workflows"), RetryPolicy(max_attempts=10, max_delay=5.0, max_total_wait=10.0))

    assert call.waits == [4.0, 4.0], "a third wait of 4 would make 12 > 10"
    assert len(call.attempts) == 3


def test_an_endpoint_nobody_listens_on_is_tried_max_attempts_times_and_reported_unreachable() -> None:
    call = Call(f"http://127.0.0.1:{closed_port()}/workflows", RetryPolicy(max_attempts=3, initial_delay=0.1))

    assert statuses(call.attempts) == [None, None, None]
    assert all(attempt.unreachable for attempt in call.attempts)
    assert call.last.unreachable and call.last.number == 3


def test_the_caller_hears_of_every_attempt_the_last_included_before_each_wait(scripted: ScriptedApi) -> None:
    scripted.answers += [Answer(500), Answer(action="reset")]

    call = Call(scripted.url("/workflows"))

    assert call.events == ["attempt 1", "wait", "attempt 2", "wait", "attempt 3"]
    assert [attempt.number for attempt in call.attempts] == [1, 2, 3]


def test_an_error_of_the_caller_while_hearing_of_an_attempt_ends_the_loop(scripted: ScriptedApi) -> None:
    """The Log database failing under the audit row must stop the call, not be retried as a bad answer."""
    scripted.answers.append(Answer(503))
    transport = Transport(ApiKeyHeader("X-API-Key", API_KEY))

    def audit_fails(attempt: Attempt) -> None:
        raise RuntimeError("Log database gone")

    with pytest.raises(RuntimeError, match="Log database gone"):
        call_with_retries(lambda: transport.request("GET", scripted.url("/workflows")), POLICY, audit_fails, [].append)

    assert len(scripted.requests) == 1
