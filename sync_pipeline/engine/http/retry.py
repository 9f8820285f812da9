"""The one retry loop of every HTTP call, push or pull: tenacity runs it, the rules here decide.

An attempt is transient when no answer came (`ApiCallFailed`, `ApiUnreachable` among them) or the
answer is one of `RETRYABLE_STATUSES` (408, 429, 5xx); any other answer ends the call, whatever the
caller then makes of it. A transient attempt is tried again after the API's Retry-After, else a
full-jitter backoff, within `RetryPolicy`'s attempts and total wait; a Retry-After longer than
`max_delay` ends the call at once. The caller hears of every attempt, to write one audit row each.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState, Retrying, retry_if_result

from sync_pipeline.engine.http.api import RETRYABLE_STATUSES, ApiCallFailed, ApiResponse, ApiUnreachable

_JITTER = random.Random()
"""The backoff's random source when the caller brings none (seeding one per call costs more than the loop)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying one call: attempts (the first included) and seconds spent waiting."""

    max_attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    max_total_wait: float = 300.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform over [0, min(max_delay, initial_delay * 2^(attempt-1))]."""
        return rng.uniform(0, min(self.max_delay, self.initial_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Attempt:
    """One try of a call: its number (1 = first), the answer or the failure that stood for none, its time."""

    number: int
    seconds: float
    response: ApiResponse | None = None
    failure: ApiCallFailed | None = None

    @property
    def transient(self) -> bool:
        """No answer, or one saying the receiver was busy or broken rather than the request wrong."""
        return self.response is None or self.response.status_code in RETRYABLE_STATUSES

    @property
    def unreachable(self) -> bool:
        """The endpoint could not be reached at all (refused, DNS, connect timeout)."""
        return isinstance(self.failure, ApiUnreachable)

    @property
    def retry_after(self) -> float | None:
        """The wait the API asked for before the next try, if it answered with one."""
        return None if self.response is None else self.response.retry_after_seconds


def call_with_retries(
    send: Callable[[], ApiResponse],
    policy: RetryPolicy,
    on_attempt: Callable[[Attempt], None],
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random = _JITTER,
) -> Attempt:
    """The last attempt of `send`, tried again while transient and within `policy`.

    `on_attempt` is called after each attempt, the last included, before any wait. What `send` or
    `on_attempt` raise, other than `ApiCallFailed`, ends the loop and is raised here.
    """
    numbers = itertools.count(1)

    def attempt() -> Attempt:
        number, started = next(numbers), time.perf_counter()
        try:
            response = send()
        except ApiCallFailed as exc:
            tried = Attempt(number, time.perf_counter() - started, failure=exc)
        else:
            tried = Attempt(number, time.perf_counter() - started, response=response)
        on_attempt(tried)
        return tried

    def wait(state: RetryCallState) -> float:
        retry_after = _last(state).retry_after
        return retry_after if retry_after is not None else policy.backoff(state.attempt_number, rng)

    def stop(state: RetryCallState) -> bool:
        # A longer Retry-After could outlive the entity lock's lease: this call waits for the next run.
        return (
            state.attempt_number >= policy.max_attempts
            or state.upcoming_sleep > policy.max_delay
            or state.idle_for + state.upcoming_sleep > policy.max_total_wait
        )

    retrying = Retrying(
        sleep=sleep,
        stop=stop,
        wait=wait,
        retry=retry_if_result(lambda tried: tried.transient),
        retry_error_callback=_last,  # out of tries: the last attempt is the answer, not an exception
    )
    last: Attempt = retrying(attempt)
    return last


def _last(state: RetryCallState) -> Attempt:
    """The attempt tenacity has just judged (an `Attempt`: `attempt` returns one or raises)."""
    assert state.outcome is not None
    tried: Attempt = state.outcome.result()
    return tried
