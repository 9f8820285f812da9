"""An API client over one `Transport`: what the sinks and sources call (`post_batch`, `request`).

The Dagster resource builds one from its config for the run; a sync run per customer builds one per
customer, over that customer's OAuth2 client credentials.
"""

from __future__ import annotations

from sync_pipeline.engine.http.api import ApiResponse
from sync_pipeline.engine.http.transport import Transport


class TransportClient:
    """Posts batches and sends records through one transport (session, auth, deadline, rate limit)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """POST the batch with its `Idempotency-Key`."""
        return self.request("POST", url, body, idempotency_key)

    def request(self, method: str, url: str, body: bytes | None, idempotency_key: str | None = None) -> ApiResponse:
        """One call; raises `ApiUnreachable`/`ApiCallFailed` when no HTTP answer came back."""
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return self.transport.request(method, url, body=body, headers=headers)

    def close(self) -> None:
        """Close the transport's pooled connections."""
        self.transport.close()
