"""What the engine needs from an API client, and how a call can go wrong.

The transport (transport.py) implements this over `requests`; tests implement it with a fake that
keeps what it received. Transport errors are translated there, by type, so the rest of the engine
never imports an HTTP library.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses worth trying again: the receiver was busy or broken, not the request."""
REJECTING_STATUSES = frozenset({400, 413, 422})
"""Statuses that mean the content was refused: retrying is pointless, splitting may isolate it."""
TOO_LARGE = 413
"""Refused for its size, not its content: halving always helps, whatever the halves answer."""
MAX_RESPONSE_EXCERPT = 500
"""Characters of a response body kept for the log and the rejected-records table."""
MAX_RESPONSE_BODY = 16 * 1024 * 1024
"""Bytes of a response body kept for reading per-record results; the rest is dropped."""


@dataclass(frozen=True)
class ApiResponse:
    """What came back from one call: status, content type and the (bounded, redacted) body."""

    status_code: int
    body: str = ""
    retry_after_seconds: float | None = None
    content_type: str = ""

    @property
    def is_2xx(self) -> bool:
        """A 2xx status; whether it acknowledges the batch is `Acknowledgement.judge`'s call."""
        return 200 <= self.status_code < 300

    @property
    def body_excerpt(self) -> str:
        """The start of the body, for the log and the rejected-records table."""
        return self.body[:MAX_RESPONSE_EXCERPT]


@dataclass(frozen=True)
class PerRecordResults:
    """Where a 207-style answer lists each record's outcome: `path` (dots) to a list of objects."""

    path: str
    id_field: str = "Id"
    status_field: str = "status"
    accepted: frozenset[str] = frozenset({"200", "201", "ok"})
    statuses: frozenset[int] = frozenset({207})


@dataclass(frozen=True)
class WholeBatch:
    """The answer acknowledges every record of the batch."""


@dataclass(frozen=True)
class NotAcknowledged:
    """A 2xx that is not the API's acknowledgement (an HTML login wall, an unknown status)."""

    reason: str


@dataclass(frozen=True)
class RecordByRecord:
    """A per-record answer: the acknowledged IDs, the refused ones with their own excerpt, the unanswered."""

    acknowledged: list[str]
    refused: dict[str, str]
    unanswered: list[str]


Verdict = WholeBatch | NotAcknowledged | RecordByRecord


@dataclass(frozen=True)
class Acknowledgement:
    """What counts as the API's acknowledgement of a batch; anything else tracks nothing."""

    statuses: frozenset[int] = frozenset({200, 201, 202, 204})
    content_types: frozenset[str] = frozenset({"application/json"})
    results: PerRecordResults | None = None

    def judge(self, response: ApiResponse, entity_ids: Sequence[str]) -> Verdict:
        """Decide from status and content type alone for a whole-batch answer (no per-record work)."""
        status = response.status_code
        per_record = self.results is not None and status in self.results.statuses
        if status not in self.statuses and not per_record:
            return NotAcknowledged(
                f"HTTP {status} but not an acknowledgement: {status} is not in api.acknowledgement.statuses"
            )
        if response.body:
            media_type = response.content_type.partition(";")[0].strip().lower()
            if media_type not in self.content_types:
                return NotAcknowledged(
                    f"HTTP {status} but not an acknowledgement: content type {media_type or '(none)'}"
                )
        if not per_record or self.results is None:
            return WholeBatch()
        return _read_per_record(self.results, response, entity_ids)


def _read_per_record(results: PerRecordResults, response: ApiResponse, entity_ids: Sequence[str]) -> Verdict:
    """Each record's own outcome from the results list; a record the answer does not mention is not tracked."""
    status = response.status_code
    try:
        found: object = json.loads(response.body)
    except ValueError:
        return NotAcknowledged(f"HTTP {status} but not an acknowledgement: the body is not JSON")
    for part in filter(None, results.path.split(".")):
        found = found.get(part) if isinstance(found, Mapping) else None
    if not isinstance(found, list):
        return NotAcknowledged(f"HTTP {status} but not an acknowledgement: no list at {results.path!r}")
    outcomes: dict[str, Mapping[str, object]] = {
        str(item.get(results.id_field)): item for item in found if isinstance(item, Mapping)
    }
    answer = RecordByRecord([], {}, [])
    for entity_id in entity_ids:
        item = outcomes.get(entity_id)
        if item is None:
            answer.unanswered.append(entity_id)
        elif str(item.get(results.status_field)).lower() in results.accepted:
            answer.acknowledged.append(entity_id)
        else:
            answer.refused[entity_id] = json.dumps(item, default=str)[:MAX_RESPONSE_EXCERPT]
    return answer


class ApiCallFailed(Exception):
    """The request was sent but no HTTP answer came back (read timeout, reset mid-response)."""


class ApiUnreachable(ApiCallFailed):
    """The endpoint cannot be reached at all (refused, DNS, connect timeout): stop the entity."""


class TokenRequestFailed(Exception):
    """No token could be had; the message names the token URL and the client id, never the secret."""


class TokenRequestRefused(TokenRequestFailed):
    """The token endpoint answered no (bad credentials, a wrong URL, an unusable answer): retrying
    will not help until the customer's record is corrected."""


class TokenEndpointUnavailable(TokenRequestFailed):
    """The token endpoint stayed busy, broken or silent through every retry: worth trying again later."""


class BatchPoster(Protocol):
    """Posts one batch, already encoded as a JSON array, to an endpoint URL."""

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """POST `body` with an `Idempotency-Key` header; raise `ApiUnreachable`/`ApiCallFailed`
        when no HTTP answer came back."""
        ...


class RecordRequester(Protocol):
    """Sends one record with any method (POST to create, PUT or PATCH to update) to its URL."""

    def request(self, method: str, url: str, body: bytes | None, idempotency_key: str | None = None) -> ApiResponse:
        """One call with a JSON `body` (and an `Idempotency-Key` header if given); raise
        `ApiUnreachable`/`ApiCallFailed` when no HTTP answer came back."""
        ...


def idempotency_key(entity: str, entity_ids: Sequence[str], body: bytes) -> str:
    """Derived from the entity, the batch's IDs and its exact bytes: the same content resent keeps
    its key, changed content (a corrected record) gets a new one."""
    digest = hashlib.sha256(entity.encode("utf-8"))
    for entity_id in entity_ids:
        digest.update(b"\n" + entity_id.encode("utf-8"))
    digest.update(b"\0")
    digest.update(body)
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
