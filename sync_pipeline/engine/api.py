"""What the engine needs from an API client, and how a call can go wrong.

The Dagster resource implements this over `requests`; tests implement it with a fake that keeps
what it received. Transport errors are translated at that boundary so the engine never imports
an HTTP library.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses worth trying again: the receiver was busy or broken, not the request."""
REJECTING_STATUSES = frozenset({400, 422})
"""Statuses that mean the content was refused: retrying is pointless, splitting may isolate it."""
MAX_RESPONSE_EXCERPT = 500
"""Characters of a response body kept for the log and the rejected-records table."""


@dataclass(frozen=True)
class ApiResponse:
    """What came back from one POST: the status and the start of the body, for the log."""

    status_code: int
    body_excerpt: str = ""
    retry_after_seconds: float | None = None

    @property
    def ok(self) -> bool:
        """Any 2xx means the receiver accepted the whole batch."""
        return 200 <= self.status_code < 300


class ApiCallFailed(Exception):
    """The request was sent but no HTTP answer came back (read timeout, reset mid-response)."""


class ApiUnreachable(ApiCallFailed):
    """The endpoint cannot be reached at all (refused, DNS, connect timeout): stop the entity."""


class BatchPoster(Protocol):
    """Posts one batch, already encoded as a JSON array, to an endpoint URL."""

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """POST `body` with an `Idempotency-Key` header; raise `ApiUnreachable`/`ApiCallFailed`
        when no HTTP answer came back."""
        ...


def idempotency_key(entity: str, entity_ids: Sequence[str]) -> str:
    """Derived only from the entity and the batch's IDs, so a resent batch carries the same key."""
    digest = hashlib.sha256(entity.encode("utf-8"))
    for entity_id in entity_ids:
        digest.update(b"\n" + entity_id.encode("utf-8"))
    return digest.hexdigest()


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())
