"""The "changed since last sent" step of a create/update sync: built batches into the calls they need.

Each batch of valid records is mapped to the receiver's fields, each mapped record hashed, and the
batch classified against TB_R_SYNC_ROW_HASH: a record never acknowledged is created, one whose hash
differs is updated by the receiver's id, an unchanged one costs nothing. A record the mapping refuses
is rejected with its reason, and the others go on. A record pointing at a record of an earlier
entity that the receiver does not hold yet is held back (engine/state/references.py). A dead-lettered
record (it failed `retries.max_record_attempts` runs) is left out before anything else: no call, only
counted, until `sync-pipeline resend` re-queues it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass, field

from sync_pipeline.engine.batching import Batch
from sync_pipeline.engine.mapping.field_map import FieldMap
from sync_pipeline.engine.mapping.payload import PayloadError, Record
from sync_pipeline.engine.sinks.http_records import RecordChange, RecordCounts, RecordSender, id_at
from sync_pipeline.engine.state.references import ReferenceCheck
from sync_pipeline.engine.state.row_hashes import RowHashStore, row_hash
from sync_pipeline.engine.state.tracking import Rejection


@dataclass
class ChangeCounts:
    """How many valid records were new, changed or unchanged; batches in flight add to them under `lock`."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    held_back: int = 0
    first_held_back: str | None = None
    """The first held-back record and why, for the run's log line."""
    dead: int = 0
    first_dead: str | None = None
    """Dead-lettered records read and not sent, and the first of them, for the run's log line."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


@dataclass(frozen=True)
class ChangeBatch:
    """The calls one batch needs, and the rows refused before or while mapping it."""

    changes: list[RecordChange]
    refused: list[Rejection] = field(default_factory=list)
    refused_rows: int = 0
    held_back: dict[str, str] = field(default_factory=dict)
    """The records held back, by EntityId, and why."""


def changes_of(
    batch: Batch,
    mapping: FieldMap | None,
    hashes: RowHashStore,
    entity_type: str,
    counts: ChangeCounts,
    references: ReferenceCheck | None = None,
    dead: Collection[str] = frozenset(),
    update_at: str | None = None,
) -> ChangeBatch:
    """The creates and updates one batch needs, in its order; unchanged, held-back and `dead` records are only
    counted. With `update_at` nothing is created: a record never sent is an update at the id in that field
    (the receiver holds every record already, as CHR holds its work orders)."""
    refused = list(batch.refused)
    refused_rows = batch.refused_rows
    entity_ids, records = batch.entity_ids, batch.records
    left_out = [position for position, entity_id in enumerate(entity_ids) if entity_id in dead]
    if left_out:
        with counts.lock:
            counts.dead += len(left_out)
            counts.first_dead = counts.first_dead or entity_ids[left_out[0]]
        entity_ids, records = _without(entity_ids, records, set(left_out))
    held = references.held_back(records) if references is not None else {}
    held_back = {entity_ids[position]: reason for position, reason in held.items()}
    if held:
        with counts.lock:
            counts.held_back += len(held)
            first = min(held)
            counts.first_held_back = counts.first_held_back or f"{entity_ids[first]}: {held[first]}"
        entity_ids, records = _without(entity_ids, records, set(held))
    if mapping is not None:
        mapped = mapping.map_batch(records)
        for position, error in mapped.refused.items():
            refused.append(Rejection(entity_ids[position], None, f"not sent: {error}"))
        refused_rows += len(mapped.refused)
        entity_ids = [entity_ids[position] for position in mapped.positions]
        records = mapped.records
    hashed: list[tuple[str, dict[str, object], str]] = []
    for entity_id, record in zip(entity_ids, records, strict=True):
        try:
            hashed.append((entity_id, record, row_hash(record)))
        except PayloadError as exc:
            refused.append(Rejection(entity_id, None, f"not sent: {exc}"))
            refused_rows += 1
    state = hashes.classify(entity_type, [(entity_id, digest) for entity_id, _, digest in hashed])
    new = set(state.new)
    changes: list[RecordChange] = []
    for entity_id, record, digest in hashed:
        if entity_id in new and update_at is not None:
            at = id_at(record, update_at.split("."))
            if at is None:
                refused.append(Rejection(entity_id, None, f"not sent: no {update_at} to update the record at"))
                refused_rows += 1
            else:
                changes.append(RecordChange(entity_id, record, digest, at))
        elif entity_id in new:
            changes.append(RecordChange(entity_id, record, digest, None))
        elif entity_id in state.changed:
            external_id = state.changed[entity_id]
            if external_id is None:  # creating it again would duplicate it at the receiver
                refused.append(Rejection(entity_id, None, "not sent: changed, but the receiver's id is unknown"))
                refused_rows += 1
            else:
                changes.append(RecordChange(entity_id, record, digest, external_id))
    with counts.lock:
        counts.new += len(state.new)
        counts.changed += len(state.changed)
        counts.unchanged += len(state.unchanged)
    return ChangeBatch(changes, refused, refused_rows, held_back)


def _without(entity_ids: list[str], records: list[Record], positions: set[int]) -> tuple[list[str], list[Record]]:
    """The batch's IDs and records but those at `positions`, in their order."""
    kept = [position for position in range(len(records)) if position not in positions]
    return [entity_ids[p] for p in kept], [records[p] for p in kept]


class ChangeSender:
    """A create/update entity's sink step: each batch's refusals recorded, its creates and updates sent."""

    def __init__(
        self,
        records: RecordSender,
        mapping: FieldMap | None,
        hashes: RowHashStore,
        entity_type: str,
        references: ReferenceCheck | None = None,
        dead: Collection[str] = frozenset(),
        update_at: str | None = None,
    ) -> None:
        self.changes = ChangeCounts()
        self._update_at = update_at
        self._dead = dead
        self._records = records
        self._mapping = mapping
        self._hashes = hashes
        self._entity_type = entity_type
        self._references = references

    @property
    def counts(self) -> RecordCounts:
        """What was sent, failed and rejected so far, shared by the batches in flight."""
        return self._records.counts

    def queue_failures(self) -> None:
        """The run's transient failures into the retry queue (see `RecordSender.queue_failures`)."""
        self._records.queue_failures()

    def send(self, batch: Batch) -> None:
        """Classify the batch (a Log database read), then reject and send what it needs."""
        planned = changes_of(
            batch,
            self._mapping,
            self._hashes,
            self._entity_type,
            self.changes,
            self._references,
            self._dead,
            self._update_at,
        )
        self._records.reject(planned.refused, planned.refused_rows)
        if planned.changes:
            self._records.send(planned.changes)
