"""Zuora customers as data: each one's OAuth client, its secret encrypted at rest, its API host.

A customers table in a database the settings name holds, per customer, the OAuth client id, the
client secret encrypted with Fernet (the key comes from an environment variable, never from the
table or the settings), the base URL and an active flag. Before any call each active customer is
checked: the client id and secret complete and well formed, the secret decryptable with the key,
the base URL `https` and one of Zuora's documented API hosts, which also says whether the tenant
is production or a sandbox. A bad record is reported by customer with what is wrong, never with
the secret; the others go on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.sources.sql_table import SourceUnavailable
from sync_pipeline.engine.tables import DateTime2, LongText

Environment = Literal["production", "sandbox"]

ZUORA_API_HOSTS: Mapping[str, tuple[Environment, str]] = {
    "rest.test.zuora.com": ("sandbox", "US Developer & Central Sandbox"),
    "rest.sandbox.na.zuora.com": ("sandbox", "US API Sandbox (Cloud 1)"),
    "rest.apisandbox.zuora.com": ("sandbox", "US API Sandbox (Cloud 2)"),
    "rest.na.zuora.com": ("production", "US Production (Cloud 1)"),
    "rest.zuora.com": ("production", "US Production (Cloud 2)"),
    "rest.test.eu.zuora.com": ("sandbox", "EU Developer & Central Sandbox"),
    "rest.sandbox.eu.zuora.com": ("sandbox", "EU API Sandbox"),
    "rest.eu.zuora.com": ("production", "EU Production"),
    "rest.test.ap.zuora.com": ("sandbox", "APAC Developer & Central Sandbox"),
    "rest.ap.zuora.com": ("production", "APAC Production"),
}
"""Zuora's API base URLs by host, as its v1 API reference lists them (developer.zuora.com, checked 2026-12)."""

_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")
MIN_SECRET_LENGTH = 8
MAX_SECRET_LENGTH = 256

customers_metadata = sa.MetaData()

customers_table = sa.Table(
    "ZUORA_CUSTOMER",
    customers_metadata,
    sa.Column("CustomerId", sa.Unicode(100), primary_key=True),
    sa.Column("Name", sa.Unicode(200), nullable=False),
    sa.Column("ClientId", sa.Unicode(100), nullable=True),
    sa.Column("ClientSecretEncrypted", LongText, nullable=True),
    sa.Column("BaseUrl", sa.Unicode(300), nullable=True),
    sa.Column("Active", sa.Boolean, nullable=False),
    sa.Column("ModifiedOn", DateTime2, nullable=True),
)
"""One row per customer; the secret only as the Fernet token of its UTF-8 text."""


@dataclass(frozen=True)
class CustomerCredentials:
    """A customer whose credentials passed every check: ready for a token request."""

    customer_id: str
    client_id: str
    client_secret: str = field(repr=False)
    base_url: str
    environment: Environment
    data_center: str

    @property
    def token_url(self) -> str:
        """Where its OAuth tokens are requested (client credentials grant)."""
        return f"{self.base_url}/oauth/token"


@dataclass(frozen=True)
class CustomerProblem:
    """A customer that cannot be synced, with every reason, never the secret."""

    customer_id: str
    reasons: tuple[str, ...]

    def describe(self) -> str:
        """`customer acme: client_id: is missing; base_url: ...`"""
        return f"customer {self.customer_id}: {'; '.join(self.reasons)}"


class SecretBox:
    """Fernet encryption of client secrets, with the key read from an environment variable by the caller."""

    def __init__(self, key: str, key_env_var: str) -> None:
        try:
            self._fernet = Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise ValueError(
                f"{key_env_var}: not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
            ) from None
        self._key_env_var = key_env_var

    def encrypt(self, secret: str) -> str:
        """The token stored in ClientSecretEncrypted."""
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The secret; raises ValueError naming the key's variable (not the token) when it cannot be."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise ValueError(
                f"client_secret: cannot be decrypted with the key in {self._key_env_var} (another key, or "
                "not a Fernet token)"
            ) from None


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def checked_customer(
    row: Mapping[str, Any], box: SecretBox, simulator: str | None = None
) -> CustomerCredentials | CustomerProblem:
    """A customers-table row checked before any call: its credentials, or every reason it cannot be used.

    `simulator` (`host:port` on the loopback interface, for the demo and the tests) is also accepted,
    over plain http, as a sandbox."""
    customer_id = str(row["CustomerId"])
    reasons: list[str] = []
    client_id = (row.get("ClientId") or "").strip()
    if not client_id:
        reasons.append("client_id: is missing")
    elif not _CLIENT_ID.match(client_id):
        reasons.append("client_id: must be 8 to 64 letters, digits, '-' or '_'")
    secret = ""
    token = row.get("ClientSecretEncrypted")
    if not token:
        reasons.append("client_secret: is missing")
    else:
        try:
            secret = box.decrypt(str(token))
        except ValueError as exc:
            reasons.append(str(exc))
        else:
            if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH or secret != secret.strip():
                reasons.append(
                    f"client_secret: must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters without "
                    "surrounding spaces"
                )
            elif any(ord(char) < 32 or ord(char) == 127 for char in secret):
                reasons.append("client_secret: holds a control character")
    base_url, host = _base_url(row.get("BaseUrl"), reasons, simulator)
    if reasons or host is None:
        return CustomerProblem(customer_id, tuple(reasons))
    environment, data_center = ZUORA_API_HOSTS.get(host, ("sandbox", "local simulator"))
    return CustomerCredentials(customer_id, client_id, secret, base_url, environment, data_center)


def _base_url(value: object, reasons: list[str], simulator: str | None) -> tuple[str, str | None]:
    """The base URL without a trailing slash and its host, if it is one of Zuora's over https (or the
    loopback simulator over http)."""
    text = str(value or "").strip().rstrip("/")
    if not text:
        reasons.append("base_url: is missing")
        return text, None
    parts = urlsplit(text)
    if simulator is not None and parts.scheme == "http" and parts.netloc == simulator and not parts.path:
        if parts.hostname not in LOOPBACK_HOSTS:
            reasons.append(f"base_url: a simulator runs on the loopback interface, not {parts.hostname!r}")
            return text, None
        return text, parts.netloc
    if parts.scheme != "https":
        reasons.append(f"base_url: {text!r} must use https")
        return text, None
    if parts.username or parts.password or parts.path or parts.query or parts.port:
        reasons.append(f"base_url: must be only https://<host>, got {parts.scheme}://{parts.hostname}...")
        return text, None
    host = (parts.hostname or "").lower()
    if host not in ZUORA_API_HOSTS:
        reasons.append(f"base_url: {host!r} is not one of Zuora's API hosts ({', '.join(ZUORA_API_HOSTS)})")
        return text, None
    return f"https://{host}", host


def active_customers(
    engine: sa.Engine, box: SecretBox, simulator: str | None = None
) -> Iterator[CustomerCredentials | CustomerProblem]:
    """Every active customer, checked (see `checked_customer`), in customer id order; raises
    `SourceUnavailable` if the table cannot be read."""
    query = sa.select(customers_table).where(customers_table.c.Active.is_(True)).order_by(customers_table.c.CustomerId)
    try:
        with engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
    except sa.exc.SQLAlchemyError as exc:
        raise SourceUnavailable(f"cannot read {customers_table.name}: {describe_db_error(exc)}") from exc
    for row in rows:
        yield checked_customer(row, box, simulator)
