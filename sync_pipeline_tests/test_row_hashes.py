"""Row hashes: what a record looked like when last acknowledged, so only new and changed records cost a call."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.mapping.payload import PayloadError
from sync_pipeline.engine.state.row_hashes import RowHashStore, row_hash
from sync_pipeline.engine.state.tracking import DeliveredButUntracked, TrackingUnavailable

from .conftest import SyncDatabases
from .row_hash_scenarios import (
    FIRST,
    ORDER_ID,
    WORK_ORDERS,
    a_batch_of_4500_splits_into_new_changed_and_unchanged_in_its_own_order,
    a_record_goes_new_sent_unchanged_changed_sent_again_unchanged,
    stored_rows,
    two_entity_types_never_mix,
)

RECORD = {
    "id": ORDER_ID,
    "title": "Replace the pump",
    "hours": 1.5,
    "urgent": True,
    "address": {"street": "1 Main St", "city": "Lyon"},
    "note": None,
}
RECORD_HASH = "7817720dd4161247d17de5f0636ea867"
"""blake2b-128 of RECORD's compact JSON with sorted keys: what every stored RowHash was computed as.
Should it ever change, every record would look changed and be sent again."""


@pytest.fixture
def store(databases: SyncDatabases) -> RowHashStore:
    """The row hash store on the test's SQLite Log database."""
    return RowHashStore(databases.log)


def test_a_record_goes_new_then_sent_then_unchanged_then_changed_with_its_external_id_then_unchanged(
    store: RowHashStore,
) -> None:
    a_record_goes_new_sent_unchanged_changed_sent_again_unchanged(store)


def test_a_batch_larger_than_one_lookup_splits_into_new_changed_and_unchanged(store: RowHashStore) -> None:
    a_batch_of_4500_splits_into_new_changed_and_unchanged_in_its_own_order(store)


def test_two_entity_types_never_mix(store: RowHashStore) -> None:
    two_entity_types_never_mix(store)


def test_a_record_acknowledged_twice_in_one_call_is_kept_once_with_its_last_content(store: RowHashStore) -> None:
    store.record_sent(WORK_ORDERS, [(ORDER_ID, row_hash(FIRST), "WO-1"), (ORDER_ID, row_hash({}), "WO-2")])

    assert stored_rows(store.engine) == [(WORK_ORDERS, ORDER_ID, row_hash({}), "WO-2")]


def test_a_hash_is_blake2b_128_of_the_sorted_json_the_same_in_another_process() -> None:
    script = f"from sync_pipeline.engine.state.row_hashes import row_hash\nprint(row_hash({RECORD!r}))\n"
    other_process = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},  # another salt for Python's own hash()
        cwd=Path(__file__).resolve().parents[1],
    ).stdout.strip()

    assert row_hash(RECORD) == other_process == RECORD_HASH


def test_the_key_order_of_a_record_and_of_its_nested_objects_does_not_change_its_hash() -> None:
    reordered = {key: RECORD[key] for key in reversed(list(RECORD))} | {
        "address": {"city": "Lyon", "street": "1 Main St"}
    }

    assert list(reordered) != list(RECORD)
    assert row_hash(reordered) == RECORD_HASH


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"hours": "1.5"}, id="a number as text"),
        pytest.param({"hours": 2}, id="another number"),
        pytest.param({"urgent": 1}, id="true as 1"),
        pytest.param({"note": ""}, id="null as empty text"),
        pytest.param({"address": {"street": "1 Main St", "city": "Lyon", "zip": None}}, id="one more nested field"),
    ],
)
def test_any_change_a_receiver_would_see_changes_the_hash(other: dict[str, object]) -> None:
    assert row_hash(RECORD | other) != RECORD_HASH


def test_a_record_that_cannot_be_encoded_is_a_payload_error_naming_the_field() -> None:
    with pytest.raises(PayloadError, match=r"^field title: "):
        row_hash(RECORD | {"title": "lone \udc80 surrogate"})


def test_without_the_table_classify_and_record_sent_name_it_and_its_ddl(tmp_path: Path) -> None:
    store = RowHashStore(sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}"))

    with pytest.raises(TrackingUnavailable) as reading:
        store.classify(WORK_ORDERS, [(ORDER_ID, RECORD_HASH)])
    with pytest.raises(DeliveredButUntracked) as writing:
        store.record_sent(WORK_ORDERS, [(ORDER_ID, RECORD_HASH, "WO-1")])

    ddl = (
        "Log table TB_R_SYNC_ROW_HASH does not exist in the Log database: "
        "create it with sql/mssql/TB_R_SYNC_ROW_HASH.sql"
    )
    assert (
        str(reading.value) == f"cannot read TB_R_SYNC_ROW_HASH: {ddl} (SQL Server) or from `sync-pipeline ddl sqlite`"
    )
    assert str(writing.value).startswith("1 records were acknowledged but their row hashes could not be written")
    assert ddl in str(writing.value) and writing.value.count == 1
