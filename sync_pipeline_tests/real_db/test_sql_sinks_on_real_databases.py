"""The SQL sinks on the real PostgreSQL and MariaDB, each with its own upsert statement, under SQL Server's
size limits (this folder's conftest fails any statement SQL Server would refuse)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.real_db.conftest import SERVERS, fresh_databases
from sync_pipeline_tests.sql_sink_scenarios import SCENARIOS, target_metadata, workflow, workflow_sink

pytestmark = pytest.mark.real_db


@pytest.fixture(params=sorted(SERVERS))
def target(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """A fresh database on the server under test holding empty target tables; dropped afterwards."""
    with fresh_databases(request.param, ["target_db"]) as urls:
        engine = create_sync_engine(urls["target_db"])
        target_metadata.create_all(engine)
        yield engine
        engine.dispose()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda scenario: scenario.__name__)
def test_the_sql_sinks_behave_on_the_real_server_as_on_sqlite(
    target: sa.Engine, scenario: Callable[[sa.Engine], None]
) -> None:
    scenario(target)


def test_postgresql_matches_a_batch_of_3000_with_stored_rows_in_one_statement_of_three_arrays() -> None:
    lookups: list[int] = []

    def count_lookups(conn: sa.Connection, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            lookups.append(len(parameters))

    with fresh_databases("postgresql", ["target_db"]) as urls:
        engine = create_sync_engine(urls["target_db"])
        target_metadata.create_all(engine)
        sa.event.listen(engine, "before_cursor_execute", count_lookups)
        try:
            counts = workflow_sink(engine).write([workflow(n) for n in range(3000)])
        finally:
            engine.dispose()

    assert counts.inserted == 3000
    assert lookups == [3], "tenants, workflow ids and timestamps: one array each"
