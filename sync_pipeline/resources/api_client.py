"""The third-party API client resource: the API's `Transport`, built from the resource's config.

The transport (engine/http/transport.py) holds the keep-alive session, the call deadline, the
redaction of the secret and the rate limit; this resource only chooses the auth and opens and
closes it with the run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from sync_pipeline.engine.http.api import ApiResponse
from sync_pipeline.engine.http.auth import ApiKeyHeader, Auth, BearerToken, is_header_value
from sync_pipeline.engine.http.client import TransportClient
from sync_pipeline.engine.http.rate_limit import RateLimiter
from sync_pipeline.engine.http.transport import DEFAULT_RATE_LIMIT_WAIT, Transport


class SyncApiClient(dg.ConfigurableResource, ABC):
    """Posts a batch to an endpoint, or sends one record; the real client talks HTTP, test fakes keep what they get."""

    @abstractmethod
    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """POST a JSON array; raise `ApiUnreachable`/`ApiCallFailed` when no HTTP answer came back."""

    @abstractmethod
    def request(self, method: str, url: str, body: bytes | None, idempotency_key: str | None = None) -> ApiResponse:
        """One call with any method, for syncs that create and update record by record; raise
        `ApiUnreachable`/`ApiCallFailed` when no HTTP answer came back."""


class TransportApiClient(SyncApiClient, ABC):
    """A real client: one transport (keep-alive session, auth, deadline, rate limit) per run, its auth the
    subclass's."""

    timeout_seconds: float = 30.0
    call_deadline_seconds: float | None = Field(
        default=None,
        description="Most seconds one whole call (connect, send, receive) may take; unset: timeout_seconds.",
    )
    verify_tls: bool = True
    rate_limit_max_wait_seconds: float = Field(
        default=DEFAULT_RATE_LIMIT_WAIT,
        description="Most seconds a call waits for a rate-limit window the API announced as exhausted.",
    )
    _client: TransportClient | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Open the transport that every call of the run reuses; warn loudly when TLS is not verified."""
        if not self.verify_tls and context.log is not None:
            context.log.warning("api.verify_tls is false: the API's TLS certificate is NOT verified")
        self._client = TransportClient(self._new_transport())

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the transport's pooled connections."""
        if self._client is not None:
            self._client.close()

    def transport_client(self) -> TransportClient:
        """The run's client (made on first use outside a run, as in tests)."""
        client = self._client = self._client or TransportClient(self._new_transport())
        return client

    @abstractmethod
    def _auth(self) -> Auth:
        """The auth every request carries; raises ValueError naming the variable of a secret that cannot work."""

    def _new_transport(self) -> Transport:
        return Transport(
            self._auth(),
            timeout_seconds=self.timeout_seconds,
            call_deadline_seconds=self.call_deadline_seconds,
            verify_tls=self.verify_tls,
            rate_limit=RateLimiter(self.rate_limit_max_wait_seconds),
        )


class HttpSyncApiClient(TransportApiClient):
    """The REST client: batches and records as JSON, the secret in a header or as a bearer token."""

    api_key: str = Field(
        description=(
            "The API's secret, sent in `api_key_header` or as a bearer token (`auth_kind`). Always "
            "`{env: SYNC_API_KEY}` (read from the environment when the run starts); leave it so in the "
            "launchpad, never paste the key itself."
        ),
    )
    api_key_env_var: str = Field(
        default="SYNC_API_KEY", description="The environment variable `api_key` comes from, for error messages."
    )
    api_key_header: str = "X-API-Key"
    auth_kind: Literal["api_key_header", "bearer"] = Field(
        default="api_key_header",
        description="How the secret is sent: in `api_key_header`, or as `Authorization: Bearer <secret>`.",
    )

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """POST the batch through the transport with its `Idempotency-Key`."""
        return self.request("POST", url, body, idempotency_key)

    def request(self, method: str, url: str, body: bytes | None, idempotency_key: str | None = None) -> ApiResponse:
        """The call through the same transport as the batches: session, auth, deadline, rate limit, redaction."""
        return self.transport_client().request(method, url, body, idempotency_key)

    def _auth(self) -> Auth:
        if not is_header_value(self.api_key):
            # requests would refuse it on every call with the value in its message, which would
            # then reach SchedulerLog and the logs: refuse it here, once, without showing it.
            raise ValueError(
                "api_key: not usable as an HTTP header value (leading or trailing whitespace, a line "
                f"break or another control character); check the {self.api_key_env_var} environment variable"
            )
        if self.auth_kind == "bearer":
            return BearerToken(self.api_key)
        return ApiKeyHeader(self.api_key_header, self.api_key)
