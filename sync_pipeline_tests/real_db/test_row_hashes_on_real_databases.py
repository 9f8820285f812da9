"""TB_R_SYNC_ROW_HASH classified and upserted on the real servers, each with its own upsert statement."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.state.row_hashes import RowHashStore
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.real_db.conftest import RealDatabases
from sync_pipeline_tests.row_hash_scenarios import (
    a_batch_of_4500_splits_into_new_changed_and_unchanged_in_its_own_order,
    a_record_goes_new_sent_unchanged_changed_sent_again_unchanged,
    two_entity_types_never_mix,
)

pytestmark = pytest.mark.real_db


@pytest.fixture
def store(real_databases: RealDatabases) -> Iterator[RowHashStore]:
    """The row hash store on a fresh Log database of the server under test."""
    engine = create_sync_engine(real_databases.urls["log_db"])
    create_log_tables(engine)
    yield RowHashStore(engine)
    engine.dispose()


@pytest.mark.parametrize(
    "scenario",
    [
        a_record_goes_new_sent_unchanged_changed_sent_again_unchanged,
        a_batch_of_4500_splits_into_new_changed_and_unchanged_in_its_own_order,
        two_entity_types_never_mix,
    ],
    ids=lambda scenario: scenario.__name__,
)
def test_row_hashes_behave_on_the_real_server_as_on_sqlite(
    store: RowHashStore, scenario: Callable[[RowHashStore], None]
) -> None:
    scenario(store)
