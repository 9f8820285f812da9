"""Database errors as one safe line for logs and metadata; a missing Log table says how to create it."""

from __future__ import annotations

import re

import sqlalchemy as sa

from sync_pipeline.engine.tables import log_metadata

_MISSING_TABLE_NAME = (
    re.compile(r'relation "(?:\w+\.)?(\w+)" does not exist'),  # PostgreSQL
    re.compile(r"Table '(?:\w+\.)?(\w+)' doesn't exist"),  # MariaDB, MySQL
    re.compile(r"no such table: (?:\w+\.)?(\w+)"),  # SQLite
    re.compile(r"Invalid object name '(?:\w+\.)?(\w+)'"),  # SQL Server
)
_UNDEFINED_TABLE_CODES = {"42P01", 1146, "42S02"}
"""The driver's own code for "no such table": PostgreSQL's SQLSTATE, MySQL's errno, ODBC's SQLSTATE."""


def first_line(exc: BaseException) -> str:
    """`<class>: <first line of the message>`, at most 500 characters: what a log line may carry."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:500]


def describe_db_error(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's first line, without the SQL text or parameters SQLAlchemy appends; a missing Log
    table is named with the script or command that creates it."""
    cause = getattr(exc, "orig", None) or exc
    missing = missing_log_table(exc)
    if missing is not None and isinstance(exc, sa.exc.DBAPIError):
        return (
            f"Log table {missing} does not exist in the Log database: create it with sql/mssql/{missing}.sql "
            f"(SQL Server) or from `sync-pipeline ddl {_ddl_dialect(exc)}`"
        )
    return first_line(cause)


def missing_log_table(exc: sa.exc.SQLAlchemyError) -> str | None:
    """The Log table the driver reported as missing, if that is what `exc` is."""
    cause = getattr(exc, "orig", None)
    if cause is None:
        return None
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None) or (cause.args or [None])[0]
    is_sqlite_error = type(cause).__module__ == "sqlite3"
    if code not in _UNDEFINED_TABLE_CODES and not is_sqlite_error:
        return None
    for pattern in _MISSING_TABLE_NAME:
        found = pattern.search(str(cause))
        if found and found.group(1) in log_metadata.tables:
            return found.group(1)
    return None


def _ddl_dialect(exc: sa.exc.DBAPIError) -> str:
    module = type(exc.orig).__module__.split(".")[0]
    return {"psycopg": "postgresql", "psycopg2": "postgresql", "sqlite3": "sqlite", "pyodbc": "mssql"}.get(
        module, "mysql"
    )
