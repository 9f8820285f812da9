"""A SQLAlchemy-backed database resource, used three times: default_db, ess_db and log_db."""

from __future__ import annotations

import re
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr


def create_sync_engine(url: str) -> sa.Engine:
    """An engine with the settings every sync database needs, whatever the dialect.

    Row values stay out of error messages (`hide_parameters`), dropped connections are noticed
    before use, and on SQL Server pyodbc's `fast_executemany` makes tracking inserts one bulk
    executemany (one row's parameters per execution, so the 2100-parameter limit is never near).
    """
    options: dict[str, Any] = {"hide_parameters": True, "pool_pre_ping": True}
    if sa.make_url(url).get_backend_name() == "mssql":
        options["fast_executemany"] = True
    return sa.create_engine(url, **options)


_SECRET_QUERY_KEYS = ("password", "pwd", "passwd")
_ODBC_PASSWORD = re.compile(r"\b(PWD|PASSWORD)(\s*=\s*)(\{(?:[^}]|\}\})*\}|[^;]*)", re.IGNORECASE)
"""`PWD=value` in an ODBC connection string; a braced value may hold `;` and escapes `}` as `}}`."""


def masked_url(url: str) -> str:
    """The URL with every password masked: its own, any password query key, and inside `odbc_connect=`.

    Drivers take a password from the query too (`?password=`, or `PWD=` that SQLAlchemy passes on
    to ODBC), so masking only the URL's user:password part is not enough.
    """
    parsed = sa.make_url(url)
    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in parsed.query.items():
        if any(secret in key.lower() for secret in _SECRET_QUERY_KEYS):
            query[key] = "***"
        elif key == "odbc_connect" and isinstance(value, str):
            query[key] = _ODBC_PASSWORD.sub(r"\1\2***", value)
        else:
            query[key] = value
    return parsed.set(query=query).render_as_string(hide_password=True)


class SyncDatabase(dg.ConfigurableResource):
    """One database the sync reads or writes; its URL is a secret and comes from an env var."""

    url: str = Field(
        description="SQLAlchemy URL, e.g. mssql+pyodbc://...; always given as an EnvVar.",
    )
    _engine: sa.Engine | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Create the engine once per run; its pool is shared by every asset using it."""
        self._engine = create_sync_engine(self.url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the pool's connections at the end of the run."""
        if self._engine is not None:
            self._engine.dispose()

    def get_engine(self) -> sa.Engine:
        """The run's engine (created on first use outside a run, e.g. in a direct call)."""
        if self._engine is None:
            self._engine = create_sync_engine(self.url)
        return self._engine

    def describe(self) -> str:
        """The URL with the password masked: safe for logs and metadata."""
        return masked_url(self.url)
