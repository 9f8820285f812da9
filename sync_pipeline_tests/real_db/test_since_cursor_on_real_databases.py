"""The since filter and TB_R_SYNC_CURSOR on the real servers: a DATETIME(6) / timestamp mark bound in
the column's type reads only the rows changed at or since it, page by page in key order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.state.since_cursor import CursorStore
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.real_db.conftest import RealDatabases
from sync_pipeline_tests.since_scenarios import (
    a_mark_is_created_then_moved_and_each_entity_keeps_its_own,
    a_row_changed_behind_the_reader_during_the_read_is_read_by_the_next_run,
    only_rows_changed_at_or_since_the_mark_are_read_in_key_order_over_several_pages,
)

pytestmark = pytest.mark.real_db


@pytest.fixture
def source(real_databases: RealDatabases) -> Iterator[sa.Engine]:
    """A fresh source database on the server under test."""
    engine = create_sync_engine(real_databases.urls["default_db"])
    yield engine
    engine.dispose()


@pytest.fixture
def store(real_databases: RealDatabases) -> Iterator[CursorStore]:
    """The cursor store on a fresh Log database of the server under test."""
    engine = create_sync_engine(real_databases.urls["log_db"])
    create_log_tables(engine)
    yield CursorStore(engine)
    engine.dispose()


def test_only_rows_changed_at_or_since_the_mark_are_read_in_key_order_over_several_pages(source: sa.Engine) -> None:
    only_rows_changed_at_or_since_the_mark_are_read_in_key_order_over_several_pages(source)


def test_a_row_changed_behind_the_reader_during_the_read_is_read_by_the_next_run(source: sa.Engine) -> None:
    a_row_changed_behind_the_reader_during_the_read_is_read_by_the_next_run(source)


def test_a_mark_is_created_then_moved_and_each_entity_keeps_its_own(store: CursorStore) -> None:
    a_mark_is_created_then_moved_and_each_entity_keeps_its_own(store)
