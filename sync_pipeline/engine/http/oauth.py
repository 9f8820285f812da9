"""OAuth2 client credentials in the auth slot: one token per client, reused until shortly before it
expires, and renewed once when the API refuses it.

authlib's `OAuth2Session.fetch_token` sends the token request (form body, `client_secret_post`) and
reads the answer as RFC 6749 says; each request goes through the one retry loop (429 with
Retry-After, 5xx, no answer). Zuora asks that each token be used until it expires and limits its
token endpoint per IP, so a token is fetched only when none is in force or the one in force was
refused, however many threads were refused with it.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3
from authlib.integrations.requests_client import OAuth2Session, OAuthError

from sync_pipeline.engine.http.api import (
    MAX_RESPONSE_EXCERPT,
    ApiResponse,
    TokenEndpointUnavailable,
    TokenRequestRefused,
    parse_retry_after,
)
from sync_pipeline.engine.http.credential_use import REFRESHED, REQUESTED
from sync_pipeline.engine.http.retry import Attempt, RetryPolicy, call_with_retries
from sync_pipeline.engine.http.transport import USER_AGENT, failure_kind, redact

GRANT_TYPE = "client_credentials"


@dataclass(frozen=True)
class TokenCounts:
    """Token requests sent (each retry counted) and tokens obtained, for the run's metrics."""

    requests: int
    issued: int


@dataclass(frozen=True)
class Grant:
    """The headers a call goes with, and which token they carry: its serial number (1 for the client's first)
    and how it was had (`requested`, or `refreshed` after the API refused the one before)."""

    headers: Mapping[str, str] = field(repr=False)
    serial: int
    obtained: str


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    renew_at: float
    serial: int
    obtained: str


class _NotIssued(Exception):
    """Raised from authlib's response hook: the token endpoint answered, but not with a token."""

    def __init__(self, response: ApiResponse) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class ClientCredentials:
    """The `Auth` of an API behind OAuth2 client credentials: `Authorization: Bearer <token in force>`.

    Safe to share between threads. `clock` and `sleep` are the time it renews by and waits with.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        expiry_margin_seconds: float = 60.0,
        retry_policy: RetryPolicy | None = None,
        timeout_seconds: float = 30.0,
        verify_tls: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self._margin = expiry_margin_seconds
        self._policy = retry_policy or RetryPolicy()
        self._timeout = timeout_seconds
        self._clock = clock
        self._sleep = sleep
        self._token: _Token | None = None
        self._issued: list[str] = []
        self._requests = 0
        self._lock = threading.Lock()  # one fetch at a time; the threads refused with a token wait for its successor
        self._session = OAuth2Session(client_id, client_secret, token_endpoint_auth_method="client_secret_post")
        self._session.verify = verify_tls
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.register_compliance_hook("access_token_response", self._answer_or_raise)

    def __repr__(self) -> str:
        return f"ClientCredentials(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def headers(self) -> Mapping[str, str]:
        """The token in force, fetched first when there is none or it is about to expire."""
        return self.grant().headers

    def grant(self) -> Grant:
        """The headers of the token in force (fetched first when there is none or it is about to expire),
        with which token it is, for a `CredentialUse` to tell one token's calls from the next one's."""
        with self._lock:
            if self._token is None or self._clock() >= self._token.renew_at:
                self._token = self._fetch(REQUESTED)
            return Grant(_bearer(self._token), self._token.serial, self._token.obtained)

    def same_client(self, token_url: str, client_id: str, client_secret: str) -> bool:
        """Whether these credentials are for that client at that token endpoint (a changed secret is not)."""
        return (self.token_url, self.client_id, self._client_secret) == (token_url, client_id, client_secret)

    def secrets(self) -> tuple[str, ...]:
        """The client secret and every token issued so far (an answer may echo an old one)."""
        with self._lock:
            return (self._client_secret, *self._issued)

    def refresh(self, refused: Mapping[str, str]) -> bool:
        """A new token if `refused` carries the one in force; True either way (send again). Raises
        `TokenRequestFailed` when no new token can be had."""
        with self._lock:
            if self._token is not None and dict(refused) == _bearer(self._token):
                self._token = self._fetch(REFRESHED)
            return True

    @property
    def counts(self) -> TokenCounts:
        """Token requests sent and tokens obtained so far."""
        with self._lock:
            return TokenCounts(self._requests, len(self._issued))

    def close(self) -> None:
        """Close the token endpoint's pooled connections."""
        self._session.close()

    def _fetch(self, obtained: str) -> _Token:
        """One token through the retry loop, `obtained` as `requested` or `refreshed`; called with the lock held."""
        started = self._clock()
        issued: dict[str, Any] = {}

        def send() -> ApiResponse:
            self._requests += 1
            try:
                token = self._session.fetch_token(
                    self.token_url, grant_type=GRANT_TYPE, timeout=self._timeout, allow_redirects=False
                )
            except _NotIssued as refused:
                return refused.response
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise failure_kind(exc)(self._redact(f"{type(exc).__name__}: {exc}")[:300]) from None
            except (OAuthError, ValueError) as exc:  # a 2xx that is not a token answer
                raise TokenRequestRefused(
                    self._failure(f"an unusable answer ({self._redact(str(exc))[:200]})")
                ) from None
            issued.update(token)
            return ApiResponse(200)

        last = call_with_retries(send, self._policy, on_attempt=_ignore, sleep=self._sleep)
        if last.response is None or last.transient:
            raise TokenEndpointUnavailable(self._failure(_outcome(last), attempts=last.number))
        if not last.response.is_2xx:
            raise TokenRequestRefused(self._failure(_outcome(last)))
        value, token_type = issued.get("access_token"), str(issued.get("token_type", "")).lower()
        if not isinstance(value, str) or not value or token_type != "bearer":
            raise TokenRequestRefused(self._failure("an answer without a bearer access_token"))
        self._issued.append(value)
        return _Token(value, started + self._lifetime(issued.get("expires_in")), len(self._issued), obtained)

    def _lifetime(self, expires_in: object) -> float:
        """Seconds to use a token: `expires_in` less the margin, the margin never more than half of it
        (a short-lived token is still used); without `expires_in`, until refused."""
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)
        if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
            return math.inf
        return float(expires_in) - min(self._margin, expires_in / 2)

    def _answer_or_raise(self, response: requests.Response) -> requests.Response:
        """authlib's hook on each token answer: anything but a 2xx goes to the retry loop as an `ApiResponse`."""
        if 200 <= response.status_code < 300:
            return response
        raise _NotIssued(
            ApiResponse(
                response.status_code,
                self._redact(response.text),
                parse_retry_after(response.headers.get("Retry-After")),
                response.headers.get("Content-Type", ""),
            )
        )

    def _redact(self, text: str) -> str:
        return redact(text, (self._client_secret, *self._issued))

    def _failure(self, what: str, attempts: int | None = None) -> str:
        tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts is not None else ""
        return f"no token from {self.token_url} for client id {self.client_id!r}{tries}: {what}"


def _bearer(token: _Token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.value}"}


def _ignore(attempt: Attempt) -> None:
    """Token attempts are counted by the credentials themselves, not audited per call."""


def _outcome(attempt: Attempt) -> str:
    """What the last attempt got: the OAuth error of the answer, its status and excerpt, or no answer."""
    if attempt.response is None:
        return f"no answer ({attempt.failure})"
    response = attempt.response
    try:
        body = json.loads(response.body)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        description = body.get("error_description")
        return f"HTTP {response.status_code} {body['error']}" + (f" ({description})" if description else "")
    return f"HTTP {response.status_code} {response.body[:MAX_RESPONSE_EXCERPT]}".rstrip()
