"""What a sync's entities are made of: field types, fields and entity specs, as plain data.

An entity is one `EntitySpec`: its name, which database it is read from, and the fields of the
model the API expects. Where it lives in a given deployment (table, key column, endpoint) is a
setting, so adding an entity means adding a spec and an entry in the settings file, not code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


@dataclass(frozen=True)
class EntitySpec:
    """What is synced: the entity's name, its asset name, its source database and its model."""

    name: str
    asset_name: str
    source_db: str  # resource key of the source database: "default_db" or "ess_db"
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        """The field called `name`; raises KeyError naming the entity when there is none."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"entity {self.name} has no field {name!r}")
