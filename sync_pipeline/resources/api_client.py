"""The third-party API client resource: a keep-alive `requests.Session` that posts JSON batches."""

from __future__ import annotations

from abc import ABC, abstractmethod

import dagster as dg
import requests
from pydantic import Field, PrivateAttr

from sync_pipeline.engine.api import (
    MAX_RESPONSE_EXCERPT,
    ApiCallFailed,
    ApiResponse,
    ApiUnreachable,
    parse_retry_after,
)

USER_AGENT = "sync_pipeline/0.1"
MAX_CONNECTIONS = 8  # keep-alive connections per host: enough for the most batches in flight


class SyncApiClient(dg.ConfigurableResource, ABC):
    """Posts a batch to an endpoint; the real client talks HTTP, test fakes keep what they get."""

    @abstractmethod
    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """POST a JSON array; raise `ApiUnreachable`/`ApiCallFailed` when no HTTP answer came back."""


class HttpSyncApiClient(SyncApiClient):
    """The real client: one keep-alive session per run, the API key in a configurable header."""

    api_key: str = Field(
        description="Sent in `api_key_header`; always given as EnvVar('SYNC_API_KEY').",
    )
    api_key_header: str = "X-API-Key"
    timeout_seconds: float = 30.0
    verify_tls: bool = True
    _session: requests.Session | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Open the session that every batch of the run reuses; warn loudly when TLS is not verified."""
        if not self.verify_tls and context.log is not None:
            context.log.warning("api.verify_tls is false: the API's TLS certificate is NOT verified")
        self._session = self._new_session()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the session's pooled connections."""
        if self._session is not None:
            self._session.close()

    def _new_session(self) -> requests.Session:
        if not _is_header_value(self.api_key):
            # requests would refuse it on every call with the value in its message, which would
            # then reach SchedulerLog and the logs: refuse it here, once, without showing it.
            raise ValueError(
                "api_key: not usable as an HTTP header value (leading or trailing whitespace, a line "
                "break or another control character); check the SYNC_API_KEY environment variable"
            )
        session = requests.Session()
        session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=MAX_CONNECTIONS))
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=MAX_CONNECTIONS))
        session.verify = self.verify_tls
        session.headers.update(
            {
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
                self.api_key_header: self.api_key,
            }
        )
        return session

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """POST the batch; transport errors become the engine's own exceptions, without secrets."""
        if self._session is None:
            self._session = self._new_session()
        try:
            response = self._session.post(
                url,
                data=body,
                headers={"Idempotency-Key": idempotency_key},
                timeout=self.timeout_seconds,
                allow_redirects=False,  # a redirect would carry the API key header to another server
            )
        except requests.ConnectionError as exc:  # includes ConnectTimeout
            if _is_mid_response(exc):
                raise ApiCallFailed(_safe_reason(exc)) from None
            raise ApiUnreachable(_safe_reason(exc)) from None
        except requests.RequestException as exc:  # read timeout, a body cut off mid-way
            raise ApiCallFailed(_safe_reason(exc)) from None
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return ApiResponse(response.status_code, response.text[:MAX_RESPONSE_EXCERPT], retry_after)


def _is_header_value(value: str) -> bool:
    """What requests accepts as a header value: no surrounding whitespace, no control characters."""
    return value == value.strip() and not any(ord(char) < 32 or ord(char) == 127 for char in value)


def _is_mid_response(exc: requests.RequestException) -> bool:
    """A connection dropped after the request went out is a failed call, not an unreachable host."""
    text = str(exc)
    return "RemoteDisconnected" in text or "Connection aborted" in text


def _safe_reason(exc: requests.RequestException) -> str:
    """The exception's class and message; the key cannot be in it, as an invalid one never gets this far."""
    return f"{type(exc).__name__}: {str(exc)[:300]}"
