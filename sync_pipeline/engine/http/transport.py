"""Every HTTP call to an API, push or pull: a keep-alive `requests.Session`, its auth, its rate limit.

Each call is bounded as a whole by the call deadline (requests only bounds each socket read), the
credentials are cut out of everything an answer or a transport error brings back, and a failure
is told apart by its exception's type: no answer (`ApiCallFailed`) or no connection (`ApiUnreachable`).
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Iterable, Mapping

import requests
import urllib3

from sync_pipeline.engine.http.api import (
    MAX_RESPONSE_BODY,
    ApiCallFailed,
    ApiResponse,
    ApiUnreachable,
    parse_retry_after,
)
from sync_pipeline.engine.http.auth import Auth
from sync_pipeline.engine.http.rate_limit import RateLimiter

USER_AGENT = "sync_pipeline/0.1"
MAX_CONNECTIONS = 8  # keep-alive connections per host: enough for the most batches in flight
READ_SIZE = 64 * 1024
REDACTED = "[redacted]"
UNAUTHORIZED = 401
JSON_BODY = "application/json; charset=utf-8"
DEFAULT_RATE_LIMIT_WAIT = 60.0
"""Most seconds a call waits for an exhausted rate-limit window: `RetryPolicy.max_delay`'s default."""


class Transport:
    """One API: its session, its auth applied to each request, its call deadline and its rate limit.

    Safe to share between threads (batches in flight): requests' session pools its connections.
    """

    def __init__(
        self,
        auth: Auth,
        timeout_seconds: float = 30.0,
        call_deadline_seconds: float | None = None,
        verify_tls: bool = True,
        rate_limit: RateLimiter | None = None,
    ) -> None:
        self._auth = auth
        self._deadline = call_deadline_seconds or timeout_seconds
        self._read_timeout = min(timeout_seconds, self._deadline)
        self._rate_limit = rate_limit or RateLimiter(DEFAULT_RATE_LIMIT_WAIT)
        self._session = requests.Session()
        for scheme in ("https://", "http://"):
            self._session.mount(scheme, requests.adapters.HTTPAdapter(pool_maxsize=MAX_CONNECTIONS))
        self._session.verify = verify_tls
        self._session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiResponse:
        """One call within the deadline, a JSON `body` if given; sent once more with fresh credentials
        if the answer is 401 and the auth could refresh. Raises `ApiUnreachable`/`ApiCallFailed`
        when no HTTP answer came back."""
        extra = dict(headers or {})
        if body is not None:
            extra.setdefault("Content-Type", JSON_BODY)
        self._rate_limit.wait_turn()
        credential = self._auth.headers()
        response = self._within_deadline(method, url, body, params, {**extra, **credential})
        if response.status_code == UNAUTHORIZED and self._auth.refresh(credential):
            response = self._within_deadline(method, url, body, params, {**extra, **self._auth.headers()})
        return response

    def _within_deadline(
        self, method: str, url: str, body: bytes | None, params: Mapping[str, str] | None, headers: dict[str, str]
    ) -> ApiResponse:
        deadline = time.monotonic() + self._deadline
        outcome: list[ApiResponse | BaseException] = []
        finished = threading.Event()

        def call() -> None:
            try:
                outcome.append(self._send(method, url, body, params, headers, deadline))
            except BaseException as exc:  # handed to the caller's thread below
                outcome.append(exc)
            finally:
                finished.set()

        # A watchdog, because a server trickling its headers keeps every socket read short: the call
        # is left to end on its own and handled as if it timed out.
        threading.Thread(target=call, name="api-call", daemon=True).start()
        if not finished.wait(self._deadline):
            raise ApiCallFailed(self._past_deadline(url))
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        params: Mapping[str, str] | None,
        headers: dict[str, str],
        deadline: float,
    ) -> ApiResponse:
        """One request whose answer is read in pieces against the deadline, so a trickle cannot outlast it."""
        try:
            with self._session.request(
                method,
                url,
                data=body,
                params=params,
                headers=headers,
                timeout=self._read_timeout,
                allow_redirects=False,  # a redirect would carry the credentials to another server
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
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise failure_kind(exc)(self._safe_reason(exc)) from None
        self._rate_limit.observe(response.headers)
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

    def _past_deadline(self, url: str) -> str:
        return f"no complete answer from {url} within api.call_deadline_seconds ({self._deadline:g} s)"

    def _redact(self, text: str) -> str:
        """The text with every credential cut out: receivers echo them in error bodies, which are logged
        and kept, as written or JSON-escaped (`\\u002B` for `+`, `\\/` for `/`, as .NET and PHP write them)."""
        return redact(text, self._auth.secrets())

    def _safe_reason(self, exc: BaseException) -> str:
        """The exception's class and message, with the credentials cut out (before shortening, so no part
        of one is left at the cut) should a library ever quote them."""
        return self._redact(f"{type(exc).__name__}: {exc}")[:300]


def failure_kind(exc: BaseException) -> type[ApiCallFailed]:
    """What a requests or urllib3 error means, told by its type, never by its text: no connection
    (refused, DNS, connect timeout, TLS) or a call that got no answer (timeout, cut off, reset)."""
    if not isinstance(exc, requests.ConnectionError):  # a read timeout, a body cut off mid-read
        return ApiCallFailed
    # urllib3 raises ProtocolError when the connection broke after the request was sent (reset, or
    # closed without an answer), and requests wraps it in the ConnectionError of a refused connection.
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, urllib3.exceptions.MaxRetryError):
        cause = cause.reason
    return ApiCallFailed if isinstance(cause, urllib3.exceptions.ProtocolError) else ApiUnreachable


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each of `secrets` cut out, as written or JSON-escaped: the one redaction of every
    answer and error, the transport's and the token requests' (engine/http/oauth.py)."""
    present = tuple(secret for secret in secrets if secret)
    if not present:
        return text
    # Every escaped form starts with a backslash: without one in the text, only a secret as written can be
    # there, and `in` finds that far faster than the pattern scans a page of records.
    if "\\" not in text and not any(secret in text for secret in present):
        return text
    return _secrets_pattern(present).sub(REDACTED, text)


@functools.lru_cache(maxsize=4)
def _secrets_pattern(secrets: tuple[str, ...]) -> re.Pattern[str]:
    """Any of the secrets as written or with any of its characters JSON-escaped (`\\uXXXX` in either case, and the
    short escapes of `/`, `"` and a backslash: a password may hold either of the last two)."""
    return re.compile("|".join(_escaped_forms(secret) for secret in sorted(secrets, key=len, reverse=True)))


def _escaped_forms(secret: str) -> str:
    return "".join(f"(?:{'|'.join(_char_forms(char))})" for char in secret)


def _char_forms(char: str) -> list[str]:
    """The patterns of one character of a secret as JSON may write it."""
    forms = [re.escape(char), f"\\\\u(?i:{ord(char):04x})"]
    if char in _SHORT_ESCAPED:
        forms.append(re.escape("\\" + char))
    return forms


_SHORT_ESCAPED = '/"\\'
"""The characters of a secret JSON may write as a backslash and themselves."""
