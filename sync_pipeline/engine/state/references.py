"""Records that point at records of an earlier entity (a contact at its account, a work order at its
customer) go out only once the receiver holds what they point at; the others are held back this run.

What the receiver holds is what it acknowledged: the referenced entity's rows in TB_R_SYNC_ROW_HASH.
A held-back record keeps no state, so the next run reads it again and sends it once its account went
through, never with a dangling reference the receiver would refuse or, worse, accept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sync_pipeline.engine.mapping.entity_ids import InvalidEntityId, canonical_entity_id
from sync_pipeline.engine.state.row_hashes import RowHashStore
from sync_pipeline.specs.model import FieldType


@dataclass(frozen=True)
class ReferencedEntity:
    """A field of the record and the EntityType (in the Log database) of the records its value is the key of."""

    field: str
    entity_type: str
    key_type: FieldType


class ReferenceCheck:
    """Finds the records of a batch whose referenced records the receiver does not hold yet."""

    def __init__(self, references: Sequence[ReferencedEntity], hashes: RowHashStore) -> None:
        self._references = tuple(references)
        self._hashes = hashes

    def held_back(self, records: Sequence[Mapping[str, Any]]) -> dict[int, str]:
        """The position of each record to hold back and why; a NULL reference points at nothing and holds
        nothing back (whether it may be NULL is the field's own rule). One Log database read per reference."""
        held: dict[int, str] = {}
        for reference in self._references:
            keys: dict[int, str] = {}
            for position, record in enumerate(records):
                value = record.get(reference.field)
                if value is None or position in held:
                    continue
                try:
                    keys[position] = canonical_entity_id(value, reference.key_type)
                except InvalidEntityId as exc:
                    held[position] = f"{reference.field}: {exc}"
            known = self._hashes.acknowledged(reference.entity_type, sorted(set(keys.values())))
            for position, key in keys.items():
                if key not in known:
                    held[position] = (
                        f"{reference.field} {key} is a {reference.entity_type} the receiver does not hold yet; sent "
                        "on a run after it is"
                    )
        return held
