"""One run's use of a customer's OAuth2 client credentials, as the `Auth` its transport calls with.

The use counts the calls made with each token and tells an observer when it begins calling with
another one: `requested` (fetched during the use because none was in force or it was about to expire),
`refreshed` (fetched after the API refused the one before) or `reused` (already in force when the use
began: an earlier attempt or entity of the same run fetched it). The observer never sees a token.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # authlib loads only with the credentials themselves (engine/http/oauth.py)
    from sync_pipeline.engine.http.oauth import ClientCredentials, TokenCounts

REQUESTED = "requested"
REFRESHED = "refreshed"
REUSED = "reused"


class CredentialObserver(Protocol):
    """Told of each token a use calls with and, when the use moves on or ends, how many calls it made."""

    def token_began(self, event: str) -> None:
        """The use began calling with another token: `requested`, `refreshed` or `reused`."""
        ...

    def token_ended(self, calls: int) -> None:
        """The calls the use made with that token, once it calls with the next one or ends."""
        ...


class CredentialUse:
    """`ClientCredentials` seen by one run: the same headers, secrets and refresh, with this use's own token
    counts and each token's calls told to an observer. Safe to share between threads."""

    def __init__(self, credentials: ClientCredentials, observer: CredentialObserver) -> None:
        self._credentials = credentials
        self._observer = observer
        self._before = credentials.counts
        self._lock = threading.Lock()
        self._serial = 0  # the token this use calls with now; 0 before its first call
        self._calls = 0

    def headers(self) -> Mapping[str, str]:
        """The token in force, counted as one more call with it."""
        grant = self._credentials.grant()
        with self._lock:
            if grant.serial > self._serial:  # a thread late with the token before is counted against the new one
                self._end_token()
                self._serial = grant.serial
                self._observer.token_began(REUSED if grant.serial <= self._before.issued else grant.obtained)
            self._calls += 1
        return grant.headers

    def secrets(self) -> tuple[str, ...]:
        """The client secret and every token issued so far."""
        return self._credentials.secrets()

    def refresh(self, refused: Mapping[str, str]) -> bool:
        """A new token if `refused` carries the one in force (see `ClientCredentials.refresh`)."""
        return self._credentials.refresh(refused)

    @property
    def counts(self) -> TokenCounts:
        """Token requests sent and tokens obtained during this use."""
        now, before = self._credentials.counts, self._before
        return dataclasses.replace(now, requests=now.requests - before.requests, issued=now.issued - before.issued)

    def close(self) -> None:
        """End the use: the last token's calls are told, the token endpoint's connections closed (the token
        stays in force for a later use)."""
        with self._lock:
            self._end_token()
        self._credentials.close()

    def _end_token(self) -> None:
        if self._calls:
            self._observer.token_ended(self._calls)
        self._calls = 0
