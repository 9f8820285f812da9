"""A retention purge on the real PostgreSQL and MariaDB: the sync's rows and its customers' older than the
cutoff go in chunks (a key subquery on PostgreSQL, `DELETE ... LIMIT` on MariaDB), everything else stays,
every statement within SQL Server's limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.state.retention import LOG_RETENTION, purge_older_than
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.retention_scenarios import (
    CUTOFF,
    NOTHING_PURGED,
    OURS,
    PURGED,
    expected_remaining,
    remaining,
    seed_log_rows,
)

from .conftest import SERVERS, fresh_databases


@pytest.fixture(params=sorted(SERVERS))
def log_db(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """A fresh Log database with its tables on one real server."""
    with fresh_databases(request.param, ("log_db",)) as urls:
        engine = create_sync_engine(urls["log_db"])
        create_log_tables(engine)
        yield engine
        engine.dispose()


def test_the_sync_s_rows_older_than_the_cutoff_go_in_chunks_and_every_other_row_stays(log_db: sa.Engine) -> None:
    seed_log_rows(log_db)

    purged = purge_older_than(log_db, LOG_RETENTION, [OURS], CUTOFF, chunk_rows=4)

    assert purged == PURGED
    assert remaining(log_db) == expected_remaining()
    assert purge_older_than(log_db, LOG_RETENTION, [OURS], CUTOFF) == NOTHING_PURGED
