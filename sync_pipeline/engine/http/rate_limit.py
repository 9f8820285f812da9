"""A client-side rate limit per API, from the `RateLimit-Remaining` and `RateLimit-Reset` headers of its answers.

When an answer says no request is left in the window, the next call (on any thread) waits until the
window resets, at most `max_wait` seconds: calling before would only earn a 429 and a retry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping


class RateLimiter:
    """Holds back the calls to one API until the window its last answer announced has reset."""

    def __init__(
        self,
        max_wait: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_wait = max_wait
        self._sleep = sleep
        self._clock = clock
        self._not_before = 0.0
        self._lock = threading.Lock()  # answers and calls come from several threads (batches in flight)

    def wait_turn(self) -> None:
        """Sleep until the announced reset, if the last answer left no request in the window."""
        with self._lock:
            wait = self._not_before - self._clock()
        if wait > 0:
            self._sleep(wait)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Take the window from an answer's headers; an answer without them changes nothing."""
        remaining = _whole_number(headers.get("RateLimit-Remaining"))
        reset = _whole_number(headers.get("RateLimit-Reset"))
        if remaining is None:
            return
        with self._lock:
            if remaining > 0 or reset is None:
                self._not_before = 0.0
            else:
                self._not_before = self._clock() + min(float(reset), self._max_wait)


def _whole_number(value: str | None) -> int | None:
    """A header's non-negative integer (the form both headers take), None if absent or malformed."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() else None
