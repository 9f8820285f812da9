"""Three fresh databases on the real local PostgreSQL and MariaDB, and SQL Server's limits enforced.

Every test here runs once per backend. When a server is down the tests skip locally, but fail
when SYNC_REQUIRE_REAL_DB=1 (as .ci/run sets), so CI can never pass without them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.seed import create_log_tables, seed_entity
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import Settings
from sync_pipeline.specs.tamhr import API_KEY_ENV_VAR, DATABASE_URL_ENV_VARS, TAMHR_ENTITIES

SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/{database}?charset=utf8mb4",
}
ADMIN_DATABASE = {"postgresql": "postgres", "mariadb": ""}
MAX_PARAMETERS = 2100
MAX_VALUES_ROWS = 1000
_VALUES_ROW_SEPARATOR = re.compile(r"\)\s*,\s*\(")


@dataclass(frozen=True)
class RealDatabases:
    """URLs of three fresh databases on one server, keyed like the resources."""

    backend: str
    urls: dict[str, str]


def _admin_engine(backend: str) -> sa.Engine:
    url = SERVERS[backend].format(database=ADMIN_DATABASE[backend])
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def require_server(backend: str) -> None:
    """Skip when the server is down, or fail when SYNC_REQUIRE_REAL_DB=1 (as in CI)."""
    admin = _admin_engine(backend)
    try:
        admin.connect().close()
    except sa.exc.OperationalError as exc:
        if os.environ.get("SYNC_REQUIRE_REAL_DB") == "1":
            pytest.fail(f"{backend} is required (SYNC_REQUIRE_REAL_DB=1) but unreachable: {exc.orig}")
        pytest.skip(f"{backend} is not running: {exc.orig}")
    finally:
        admin.dispose()


@contextmanager
def fresh_databases(backend: str, keys: Sequence[str]) -> Iterator[dict[str, str]]:
    """New, empty databases on `backend`, one per key, as URLs; dropped afterwards."""
    require_server(backend)
    prefix = f"sync_test_{uuid.uuid4().hex[:8]}"
    names = {key: f"{prefix}_{key.removesuffix('_db')}" for key in keys}
    admin = _admin_engine(backend)
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield {key: SERVERS[backend].format(database=name) for key, name in names.items()}
    finally:
        with admin.connect() as conn:
            for name in names.values():
                force = " WITH (FORCE)" if backend == "postgresql" else ""
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


@pytest.fixture(params=sorted(SERVERS))
def real_databases(request: pytest.FixtureRequest) -> Iterator[RealDatabases]:
    """default_db, ess_db and log_db as three separate new databases; dropped afterwards."""
    with fresh_databases(request.param, ("default_db", "ess_db", "log_db")) as urls:
        yield RealDatabases(request.param, urls)


def _enforce_sql_server_limits(
    conn: sa.Connection, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    rows = parameters if executemany else [parameters]
    for row in rows:
        count = len(row) if row else 0
        assert count <= MAX_PARAMETERS, f"{count} parameters in one statement (SQL Server allows 2100)"
    if statement.lstrip().upper().startswith("INSERT") and " VALUES " in statement.upper():
        values_rows = len(_VALUES_ROW_SEPARATOR.findall(statement.split("VALUES", 1)[1])) + 1
        assert values_rows <= MAX_VALUES_ROWS, f"INSERT with {values_rows} VALUES rows (SQL Server allows 1000)"


@pytest.fixture(autouse=True)
def sql_server_limits() -> Iterator[None]:
    """Fail any statement, on any engine, that SQL Server would refuse for its size."""
    sa.event.listen(sa.Engine, "before_cursor_execute", _enforce_sql_server_limits)
    yield
    sa.event.remove(sa.Engine, "before_cursor_execute", _enforce_sql_server_limits)


def seed_sync_databases(
    urls: dict[str, str], settings: Settings, rows: dict[str, int], api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generated source rows per entity, empty Log tables, and the environment the resources read."""
    for spec in TAMHR_ENTITIES:
        engine = create_sync_engine(urls[spec.source_db])
        seed_entity(engine, spec, settings.entities[spec.name], rows[spec.name])
        engine.dispose()
    log_engine = create_sync_engine(urls["log_db"])
    create_log_tables(log_engine)
    log_engine.dispose()
    for key, env_var in DATABASE_URL_ENV_VARS.items():
        monkeypatch.setenv(env_var, urls[key])
    monkeypatch.setenv(API_KEY_ENV_VAR, api_key)


def table_rows(engine: sa.Engine, table: sa.Table) -> list[dict[str, Any]]:
    """Every row of a table, as dicts."""
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(table))]


def materialized(result: Any) -> dict[str, Any]:
    """The metadata values of a run's one materialization."""
    (event,) = result.get_asset_materialization_events()
    return {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}
