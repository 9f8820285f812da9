"""What a sync's entities are made of: field types, fields and entity specs, as plain data.

An entity is one `EntitySpec`: its name, which database it is read from, and the fields of the
model the API expects. Where it lives in a given deployment (table, key column, endpoint) is a
setting, so adding an entity means adding a spec and an entry in the settings file, not code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # specs.mapping reads FieldType from here
    from sync_pipeline.specs.mapping import FieldMapSettings


class FieldType(enum.Enum):
    """The JSON-facing types the product owner's models use."""

    GUID = "guid"
    TEXT = "text"
    INT = "int"
    DECIMAL = "decimal"
    DATETIME = "datetime"
    BOOL = "bool"


@dataclass(frozen=True)
class Field:
    """One model field; its name is both the source column and the JSON property."""

    name: str
    type: FieldType = FieldType.TEXT
    nullable: bool = False
    length: int | None = None  # None = unbounded text (NVARCHAR(MAX))


class StateKind(enum.Enum):
    """What a sync keeps per record to know what to send next."""

    NEVER_SENT = "never_sent"
    """TB_R_SYNC_TRACKING: a record is sent once, then never again (the TAMHR push)."""
    ROW_HASH = "row_hash"
    """TB_R_SYNC_ROW_HASH: a new record is created, a changed one updated, an unchanged one skipped."""


@dataclass(frozen=True)
class RecordSinkSpec:
    """Per-record create/update over HTTP: POST new records to the endpoint, `update_method` changed ones
    to `<endpoint>/<external id>`, the id read from a create's answer at `id_field`."""

    update_method: str = "PUT"
    id_field: str = "id"


@dataclass(frozen=True)
class EntitySpec:
    """What is synced: the entity's name, its asset name, its source database and its model, and how:
    its mapping to the receiver's fields (none: the model's own names), its state and its sink (none:
    batches POSTed as JSON arrays)."""

    name: str
    asset_name: str
    source_db: str  # resource key of the source database: "default_db" or "ess_db"
    fields: tuple[Field, ...]
    mapping: FieldMapSettings | None = field(default=None, compare=False, hash=False)
    state: StateKind = StateKind.NEVER_SENT
    record_sink: RecordSinkSpec | None = None

    def field(self, name: str) -> Field:
        """The field called `name`; raises KeyError naming the entity when there is none."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"entity {self.name} has no field {name!r}")
