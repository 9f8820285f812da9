"""The third-party API client resource: a keep-alive `requests.Session` that posts JSON batches.

Each call is bounded as a whole by `call_deadline_seconds` (requests only bounds each socket read),
and the API key is cut out of everything a response or a transport error brings back.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from abc import ABC, abstractmethod

import dagster as dg
import requests
import urllib3
from pydantic import Field, PrivateAttr

from sync_pipeline.engine.http.api import (
    MAX_RESPONSE_BODY,
    ApiCallFailed,
    ApiResponse,
    ApiUnreachable,
    parse_retry_after,
)

USER_AGENT = "sync_pipeline/0.1"
MAX_CONNECTIONS = 8  # keep-alive connections per host: enough for the most batches in flight
READ_SIZE = 64 * 1024
REDACTED = "[redacted]"


class SyncApiClient(dg.ConfigurableResource, ABC):
    """Posts a batch to an endpoint; the real client talks HTTP, test fakes keep what they get."""

    @abstractmethod
    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> ApiResponse:
        """POST a JSON array; raise `ApiUnreachable`/`ApiCallFailed` when no HTTP answer came back."""


class HttpSyncApiClient(SyncApiClient):
    """The real client: one keep-alive session per run, the API key in a configurable header."""

    api_key: str = Field(
        description=(
            "Sent in `api_key_header`. Always `{env: SYNC_API_KEY}` (read from the environment when the "
            "run starts); leave it so in the launchpad, never paste the key itself."
        ),
    )
    api_key_header: str = "X-API-Key"
    timeout_seconds: float = 30.0
    call_deadline_seconds: float | None = Field(
        default=None,
        description="Most seconds one whole call (connect, send, receive) may take; unset: timeout_seconds.",
    )
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
        """POST the batch within the call deadline; transport errors become the engine's own exceptions."""
        session = self._session = self._session or self._new_session()
        deadline = time.monotonic() + self._deadline_seconds
        outcome: list[ApiResponse | BaseException] = []
        finished = threading.Event()

        def call() -> None:
            try:
                outcome.append(self._post(session, url, body, idempotency_key, deadline))
            except BaseException as exc:  # handed to the caller's thread below
                outcome.append(exc)
            finally:
                finished.set()

        # A watchdog, because a server trickling its headers keeps every socket read short: the call
        # is left to end on its own and this batch is handled as if it timed out.
        threading.Thread(target=call, name="api-call", daemon=True).start()
        if not finished.wait(self._deadline_seconds):
            raise ApiCallFailed(self._past_deadline(url))
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _post(
        self, session: requests.Session, url: str, body: bytes, idempotency_key: str, deadline: float
    ) -> ApiResponse:
        """One POST whose body is read in pieces against the deadline, so a trickle cannot outlast it."""
        read_timeout = min(self.timeout_seconds, self._deadline_seconds)
        try:
            with session.post(
                url,
                data=body,
                headers={"Idempotency-Key": idempotency_key},
                timeout=read_timeout,
                allow_redirects=False,  # a redirect would carry the API key header to another server
                stream=True,
            ) as response:
                content = bytearray()
                while piece := response.raw.read1(READ_SIZE, decode_content=True):
                    if time.monotonic() > deadline:
                        raise ApiCallFailed(self._past_deadline(url))
                    content += piece
                    if len(content) >= MAX_RESPONSE_BODY:
                        del content[MAX_RESPONSE_BODY:]
                        break  # closing the response drops the rest and the connection
        except requests.ConnectionError as exc:  # includes ConnectTimeout
            if _is_mid_response(exc):
                raise ApiCallFailed(self._safe_reason(exc)) from None
            raise ApiUnreachable(self._safe_reason(exc)) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:  # timeout, cut off
            raise ApiCallFailed(self._safe_reason(exc)) from None
        try:
            text = content.decode(response.encoding or "utf-8", errors="replace")
        except LookupError:  # a charset no codec knows (`charset=none`): read it as UTF-8
            text = content.decode("utf-8", errors="replace")
        return ApiResponse(
            response.status_code,
            self._redact(text),
            parse_retry_after(response.headers.get("Retry-After")),
            response.headers.get("Content-Type", ""),
        )

    @property
    def _deadline_seconds(self) -> float:
        return self.call_deadline_seconds or self.timeout_seconds

    def _past_deadline(self, url: str) -> str:
        return f"no complete answer from {url} within api.call_deadline_seconds ({self._deadline_seconds:g} s)"

    def _redact(self, text: str) -> str:
        """The text with the API key cut out: receivers echo it in error bodies, which are logged and kept,
        as written or JSON-escaped (`\\u002B` for `+`, `\\/` for `/`, as .NET and PHP write them)."""
        return _key_pattern(self.api_key).sub(REDACTED, text) if self.api_key else text

    def _safe_reason(self, exc: BaseException) -> str:
        """The exception's class and message, with the key cut out (before shortening, so no part of
        it is left at the cut) should a library ever quote it."""
        return self._redact(f"{type(exc).__name__}: {exc}")[:300]


@functools.lru_cache(maxsize=4)
def _key_pattern(key: str) -> re.Pattern[str]:
    """The key as written or with any of its characters JSON-escaped (`\\uXXXX` in either case, `\\/`)."""
    return re.compile(
        "".join(
            f"(?:{re.escape(char)}|\\\\u(?i:{ord(char):04x}){'|' + re.escape(chr(92) + '/') if char == '/' else ''})"
            for char in key
        )
    )


def _is_header_value(value: str) -> bool:
    """What requests accepts as a header value: no surrounding whitespace, no control characters."""
    return value == value.strip() and not any(ord(char) < 32 or ord(char) == 127 for char in value)


def _is_mid_response(exc: requests.RequestException) -> bool:
    """A connection dropped after the request went out is a failed call, not an unreachable host."""
    text = str(exc)
    return "RemoteDisconnected" in text or "Connection aborted" in text
