"""What the engine needs from an API client, and how a call can go wrong.

The Dagster resource implements this over `requests`; tests implement it with a fake that keeps
what it received. Transport errors are translated at that boundary so the engine never imports
an HTTP library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ApiResponse:
    """What came back from one POST: the status and the start of the body, for the log."""

    status_code: int
    body_excerpt: str = ""

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

    def post_batch(self, url: str, body: bytes) -> ApiResponse:
        """POST `body`; raise `ApiUnreachable` or `ApiCallFailed` when no HTTP answer came back."""
        ...
