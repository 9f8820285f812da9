"""What TB_R_SYNC_ROW_HASH must do on every database: the same scenarios on SQLite and the real servers."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from sync_pipeline.engine.state.row_hashes import RowChanges, RowHashStore, row_hash
from sync_pipeline.engine.tables import row_hash_table

WORK_ORDERS = "praxedo/WorkOrder"
ORDER_ID = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
FIRST = {"id": ORDER_ID, "title": "Replace the pump", "address": {"city": "Lyon"}}


def a_record_goes_new_sent_unchanged_changed_sent_again_unchanged(store: RowHashStore) -> None:
    """One work order's whole life: created once, skipped while the same, updated by its external id."""
    assert store.classify(WORK_ORDERS, [(ORDER_ID, row_hash(FIRST))]) == RowChanges(new=[ORDER_ID])

    store.record_sent(WORK_ORDERS, [(ORDER_ID, row_hash(FIRST), "WO-1")])
    assert store.classify(WORK_ORDERS, [(ORDER_ID, row_hash(FIRST))]) == RowChanges(unchanged=[ORDER_ID])

    edited = FIRST | {"title": "Replace the pump and the valve"}
    assert store.classify(WORK_ORDERS, [(ORDER_ID, row_hash(edited))]) == RowChanges(changed={ORDER_ID: "WO-1"})

    store.record_sent(WORK_ORDERS, [(ORDER_ID, row_hash(edited), None)])  # the update's answer named no id
    assert store.classify(WORK_ORDERS, [(ORDER_ID, row_hash(edited))]) == RowChanges(unchanged=[ORDER_ID])
    assert store.classify(WORK_ORDERS, [(ORDER_ID, row_hash(FIRST))]) == RowChanges(changed={ORDER_ID: "WO-1"})
    assert stored_rows(store.engine) == [(WORK_ORDERS, ORDER_ID, row_hash(edited), "WO-1")]


def a_batch_of_4500_splits_into_new_changed_and_unchanged_in_its_own_order(store: RowHashStore) -> None:
    """More IDs than one lookup takes: every third new, every third changed, every third as sent."""
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"work-orders/{n}")) for n in range(4500)]
    store.record_sent(WORK_ORDERS, [(entity_id, row_hash({"n": n}), f"WO-{n}") for n, entity_id in enumerate(ids)])
    batch = [(entity_id, row_hash({"n": n} if n % 3 else {"n": n, "edited": True})) for n, entity_id in enumerate(ids)]
    batch = batch[3000:] + [(entity_id, row_hash({})) for entity_id in reversed(_unsent(1500))] + batch[:3000]

    changes = store.classify(WORK_ORDERS, batch)

    assert changes.new == list(reversed(_unsent(1500)))
    assert changes.changed == {ids[n]: f"WO-{n}" for n in [*range(3000, 4500, 3), *range(0, 3000, 3)]}
    assert changes.unchanged == [ids[n] for n in [*range(3000, 4500), *range(3000)] if n % 3]


def two_entity_types_never_mix(store: RowHashStore) -> None:
    """The same EntityId under two entity types is two records, with their own hash and external id."""
    store.record_sent("praxedo/WorkOrder", [(ORDER_ID, row_hash(FIRST), "WO-1")])

    assert store.classify("praxedo/Customer", [(ORDER_ID, row_hash(FIRST))]) == RowChanges(new=[ORDER_ID])
    store.record_sent("praxedo/Customer", [(ORDER_ID, row_hash({"name": "Lyon"}), "C-9")])
    assert store.classify("praxedo/WorkOrder", [(ORDER_ID, row_hash(FIRST))]) == RowChanges(unchanged=[ORDER_ID])
    assert store.classify("praxedo/Customer", [(ORDER_ID, row_hash(FIRST))]) == RowChanges(changed={ORDER_ID: "C-9"})


def stored_rows(engine: sa.Engine) -> list[tuple[str, str, str, str | None]]:
    """Every TB_R_SYNC_ROW_HASH row as (EntityType, EntityId, RowHash, ExternalId), sorted."""
    columns = [row_hash_table.c[name] for name in ("EntityType", "EntityId", "RowHash", "ExternalId")]
    with engine.connect() as conn:
        return sorted((a, b, c, d) for a, b, c, d in conn.execute(sa.select(*columns)))


def _unsent(count: int) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"new-work-orders/{n}")) for n in range(count)]
