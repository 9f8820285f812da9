"""How a call proves who is calling: one small class per scheme behind `Auth`, applied to each request.

A scheme whose credential expires (OAuth2 client credentials) implements `refresh`: the transport
calls it once when an answer is 401 and, when it returns True, sends the request again with the
new credential. The fixed schemes here have nothing to refresh.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class Auth(Protocol):
    """The headers that authenticate a request, the secrets to keep out of logs, and a refresh hook."""

    def headers(self) -> Mapping[str, str]:
        """The headers to add to the next request, with the credential in force now."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Every credential value an answer might echo, to be cut out of what is logged and kept."""
        ...

    def refresh(self, refused: Mapping[str, str]) -> bool:
        """Get a new credential after `refused` (what `headers` gave) was answered 401; True: send again.

        Calls on several threads may be refused at once: an implementation fetches a new credential
        only while `refused` is still the one in force, and answers True for the others too.
        """
        ...


@dataclass(frozen=True)
class ApiKeyHeader:
    """A fixed API key in a header of the API's choosing (`X-API-Key` by default)."""

    header: str
    key: str

    def headers(self) -> Mapping[str, str]:
        """The key in its header."""
        return {self.header: self.key}

    def secrets(self) -> tuple[str, ...]:
        """The key."""
        return (self.key,)

    def refresh(self, refused: Mapping[str, str]) -> bool:
        """A fixed key cannot be renewed: a 401 is the answer."""
        return False


@dataclass(frozen=True)
class BearerToken:
    """A fixed token sent as `Authorization: Bearer <token>`."""

    token: str

    def headers(self) -> Mapping[str, str]:
        """The token in the Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}

    def secrets(self) -> tuple[str, ...]:
        """The token."""
        return (self.token,)

    def refresh(self, refused: Mapping[str, str]) -> bool:
        """A fixed token cannot be renewed: a 401 is the answer."""
        return False


@dataclass(frozen=True)
class BasicCredentials:
    """A user name and password sent as HTTP Basic (`Authorization: Basic base64(user:password)`)."""

    username: str
    password: str = field(repr=False)

    def _encoded(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")

    def headers(self) -> Mapping[str, str]:
        """The credentials in the Authorization header."""
        return {"Authorization": f"Basic {self._encoded()}"}

    def secrets(self) -> tuple[str, ...]:
        """The password and its encoded header value (an echo of either would show it)."""
        return (self.password, self._encoded())

    def refresh(self, refused: Mapping[str, str]) -> bool:
        """A password cannot be renewed by the client: a 401 is the answer."""
        return False


def is_header_value(value: str) -> bool:
    """What requests accepts as a header value: no surrounding whitespace, no control characters."""
    return value == value.strip() and not any(ord(char) < 32 or ord(char) == 127 for char in value)
