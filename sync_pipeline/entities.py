"""The entity types this code location syncs, as data.

An entity is one `EntitySpec`: its name, which database it is read from, and the fields of the
model the API expects. Where it lives in a given deployment (table, key column, endpoint) is a
setting, so adding a sync means adding a spec here and an entry in the settings file, not code.
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


def _text(name: str, length: int = 255, nullable: bool = False) -> Field:
    return Field(name, FieldType.TEXT, nullable, length)


def _optional_text(*names: str, length: int = 255) -> tuple[Field, ...]:
    return tuple(_text(name, length, nullable=True) for name in names)


ID = Field("Id", FieldType.GUID)

TAMHR_ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec(
        name="Users",
        asset_name="users",
        source_db="default_db",
        fields=(
            ID,
            _text("NoReg", 50),
            _text("Username", 100),
            _text("Name", 200),
            _text("Gender", 20),
            _text("Email", 200, nullable=True),
            Field("IsActive", FieldType.INT),
        ),
    ),
    EntitySpec(
        name="ActualOrg",
        asset_name="actual_org",
        source_db="default_db",
        fields=(
            ID,
            _text("OrgCode", 50),
            *_optional_text(
                "ParentOrgCode",
                "OrgName",
                "Service",
                "NoReg",
                "Name",
                "PostCode",
                "PostName",
                "JobCode",
                "JobName",
                "EmployeeGroup",
                "EmployeeGroupText",
                "EmployeeSubgroup",
                "EmployeeSubgroupText",
                "WorkContract",
                "WorkContractText",
                "PersonalArea",
                "PersonalSubarea",
            ),
            Field("DepthLevel", FieldType.INT, nullable=True),
            Field("Staffing", FieldType.DECIMAL, nullable=True),
            Field("Chief", FieldType.INT, nullable=True),
            Field("OrgLevel", FieldType.INT, nullable=True),
            Field("Vacant", FieldType.INT, nullable=True),
            *_optional_text("Structure"),
            Field("ObjectDescription", FieldType.TEXT, nullable=True),
        ),
    ),
    EntitySpec(
        name="ActualEntity",
        asset_name="actual_entity",
        source_db="default_db",
        fields=(
            ID,
            _text("OrgCode", 50),
            _text("ObjectCode", 50),
            _text("ObjectText", 255),
            Field("ObjectDescription", FieldType.TEXT),
        ),
    ),
    EntitySpec(
        name="OrgObject",
        asset_name="org_object",
        source_db="default_db",
        fields=(
            ID,
            _text("ObjectID", 50),
            _text("ObjectType", 20),
            _text("Abbreviation", 50),
            _text("ObjectText", 255, nullable=True),
            Field("StartDate", FieldType.DATETIME),
            Field("EndDate", FieldType.DATETIME),
            Field("ObjectDescription", FieldType.TEXT, nullable=True),
        ),
    ),
    EntitySpec(
        name="EventsCalendar",
        asset_name="events_calendar",
        source_db="ess_db",
        fields=(
            ID,
            _text("Title", 255),
            _text("EventTypeCode", 50),
            Field("StartDate", FieldType.DATETIME),
            Field("EndDate", FieldType.DATETIME),
            Field("Description", FieldType.TEXT, nullable=True),
            _text("CreatedBy", 100),
            Field("CreatedOn", FieldType.DATETIME),
            _text("ModifiedBy", 100, nullable=True),
            Field("ModifiedOn", FieldType.DATETIME, nullable=True),
            Field("RowStatus", FieldType.BOOL),
        ),
    ),
)
"""The nightly TAMHR sync, in the order it must run: each entity depends on the one before."""

ENTITIES_BY_NAME: dict[str, EntitySpec] = {spec.name: spec for spec in TAMHR_ENTITIES}
