"""A SQLAlchemy-backed database resource, used three times: default_db, ess_db and log_db."""

from __future__ import annotations

import re
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr

from sync_pipeline.engine.db_errors import first_line


class DatabaseUrlError(sa.exc.ArgumentError):
    """A database URL that cannot be used as given; the message names its variable, never its password.

    An `ArgumentError`, as SQLAlchemy's own unparsable-URL error is, so whoever handles database
    errors (`SQLAlchemyError`) handles this one too.
    """


_SECRET_QUERY_KEYS = ("password", "pwd", "passwd")
_ODBC_PASSWORD = re.compile(r"\b(PWD|PASSWORD)(\s*=\s*)(\{(?:[^}]|\}\})*\}|[^;]*)", re.IGNORECASE)
"""`PWD=value` in an ODBC connection string; a braced value may hold `;` and escapes `}` as `}}`."""


def _userinfo_span(url: str) -> tuple[int, int] | None:
    """Where `user:password` sits in the URL: after the scheme, up to its last `@`.

    The last `@` of the whole URL, not of the part before a `?`: a password may hold `?`, `/` or
    `#` unencoded, and masking too much is the safe side (an `@` in the query must be %40 then).
    """
    scheme_end = url.find("://")
    if scheme_end < 0 or url[scheme_end + 3 : scheme_end + 4] == "/":  # no authority (sqlite:////path)
        return None
    start = scheme_end + 3
    at = url.rfind("@", start)
    return (start, at) if at >= 0 else None


def masked_url(url: str) -> str:
    """The URL with everything secret masked: the whole `user:password@` part, any password query key,
    and `PWD=` inside `odbc_connect=`; an unparsable URL keeps only its scheme.

    Drivers take a password from the query too (`?password=`, or `PWD=` that SQLAlchemy passes on
    to ODBC), so masking only the URL's user:password part is not enough. Everything up to the
    last `@` is masked because an unencoded `@` in a password would otherwise end it early.
    """
    span = _userinfo_span(url)
    try:
        parsed = sa.make_url(url if span is None else url[: span[0]] + url[span[1] + 1 :])
    except (sa.exc.ArgumentError, ValueError):
        return f"{url.partition('://')[0]}://*** (unparsable)" if "://" in url else "*** (not a URL)"
    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in parsed.query.items():
        if any(secret in key.lower() for secret in _SECRET_QUERY_KEYS):
            query[key] = "***"
        elif key == "odbc_connect" and isinstance(value, str):
            query[key] = _ODBC_PASSWORD.sub(r"\1\2***", value)
        else:
            query[key] = value
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return shown if span is None else shown.replace("://", "://***@", 1)


def checked_url(url: str, env_var: str) -> sa.URL:
    """The parsed URL, or a `DatabaseUrlError` naming `env_var` that says what to fix."""
    span = _userinfo_span(url)
    if span is not None and "@" in url[span[0] : span[1]].partition(":")[2]:
        raise DatabaseUrlError(
            f"{env_var}: the URL has an unencoded '@' after its user name (in the password or the query); "
            f"write '@' as %40 (percent-encode the password), e.g. postgresql+psycopg://user:pa%40ss@host/db"
        )
    try:
        return sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        reason = "the port is not a number" if isinstance(exc, ValueError) else "it is not a SQLAlchemy URL"
        raise DatabaseUrlError(
            f"{env_var} ({masked_url(url)}): {reason}; expected dialect+driver://user:password@host:port/database"
        ) from None


def create_sync_engine(url: str, env_var: str | None = None) -> sa.Engine:
    """An engine with the settings every sync database needs, whatever the dialect.

    Row values stay out of error messages (`hide_parameters`), dropped connections are noticed
    before use, and on SQL Server pyodbc's `fast_executemany` makes tracking inserts one bulk
    executemany (one row's parameters per execution, so the 2100-parameter limit is never near);
    on PostgreSQL with psycopg, lists go as binary arrays (`binary_arrays`). With `env_var`, a bad URL
    or a failed connection is reported naming the variable and the database (see `name_connection_errors`).
    """
    parsed = checked_url(url, env_var) if env_var else sa.make_url(url)
    options: dict[str, Any] = {"hide_parameters": True, "pool_pre_ping": True}
    if parsed.get_backend_name() == "mssql":
        options["fast_executemany"] = True
    if env_var is None:
        engine = sa.create_engine(parsed, **options)
    else:
        try:
            engine = sa.create_engine(parsed, **options)
        except Exception as exc:  # an unknown dialect, a driver not installed, a bad driver option
            raise DatabaseUrlError(f"{env_var} ({masked_url(url)}): {_safe(exc, parsed)}") from None
        name_connection_errors(engine, env_var, masked_url(url))
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        binary_arrays(engine)
    return engine


def binary_arrays(engine: sa.Engine) -> None:
    """Make psycopg send every list parameter of the engine's connections in binary, not as array text.

    The SQL sinks send a batch as one array per column (the upsert, the stored-rows lookup): psycopg
    writes a text array element by element in Python, about ten times slower than the binary form for
    timestamps and texts (22 ms against 2.5 ms for a 3,000-row batch of five columns). The values are
    the same either way; psycopg uses the dumper registered last for a `%s` parameter.
    """
    from psycopg.adapt import PyFormat  # only the engines of psycopg URLs get here: an optional driver

    @sa.event.listens_for(engine, "connect")
    def prefer_binary_lists(dbapi_connection: Any, record: Any) -> None:
        adapters = dbapi_connection.adapters
        adapters.register_dumper(list, adapters.get_dumper(list, PyFormat.BINARY))


def name_connection_errors(engine: sa.Engine, env_var: str, shown_url: str) -> None:
    """Make every failed connect a driver error that names the variable and the (masked) database.

    Drivers fail some connects with errors of their own (pymysql: `FileNotFoundError` for a wrong
    `ssl_ca`) that SQLAlchemy does not wrap; as the driver's `OperationalError` they reach the
    callers that stop an entity on a database error, like any connection refused.
    """
    dbapi_error = engine.dialect.loaded_dbapi.OperationalError
    password = engine.url.password

    @sa.event.listens_for(engine, "do_connect")
    def connect(dialect: sa.Dialect, record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except Exception as exc:
            raise dbapi_error(f"{env_var} ({shown_url}): cannot connect: {_safe(exc, password)}") from exc


def _safe(exc: BaseException, secret: sa.URL | str | None) -> str:
    """The error's first line, with the password cut out should a driver repeat it."""
    password = secret.password if isinstance(secret, sa.URL) else secret
    text = first_line(exc)
    return text.replace(str(password), "***") if password else text


class SyncDatabase(dg.ConfigurableResource):
    """One database the sync reads or writes; its URL is a secret and comes from an env var."""

    url: str = Field(
        description="SQLAlchemy URL, e.g. mssql+pyodbc://...; always given as an EnvVar (the launchpad "
        "shows `{env: SYNC_..._DB_URL}`, never the value).",
    )
    env_var: str | None = Field(
        default=None,
        description="Name of the environment variable `url` comes from, for error messages.",
    )
    _engine: sa.Engine | None = PrivateAttr(default=None)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the pool's connections at the end of the run."""
        if self._engine is not None:
            self._engine.dispose()

    def get_engine(self) -> sa.Engine:
        """The run's engine, created on first use (so a bad URL stops only the entities that use it).

        Raises `DatabaseUrlError`, naming the variable, when the URL cannot be used.
        """
        if self._engine is None:
            self._engine = create_sync_engine(self.url, self.env_var or "the database URL")
        return self._engine

    def describe(self) -> str:
        """The URL with the password masked: safe for logs and metadata."""
        return masked_url(self.url)
