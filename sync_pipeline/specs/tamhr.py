"""The TAMHR push: its five entities in sync order and the environment variables of its secrets."""

from __future__ import annotations

from sync_pipeline.specs.model import EntitySpec, Field, FieldType
from sync_pipeline.specs.sync import SyncSpec

DATABASE_URL_ENV_VARS = {
    "default_db": "SYNC_DEFAULT_DB_URL",
    "ess_db": "SYNC_ESS_DB_URL",
    "log_db": "SYNC_LOG_DB_URL",
}
"""The SQLAlchemy URL of each database, by resource key: the Dagster resources and the log viewer read them."""
API_KEY_ENV_VAR = "SYNC_API_KEY"


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

TAMHR_SYNC = SyncSpec(name="tamhr", declared_entities=TAMHR_ENTITIES, namespace="")
"""The TAMHR push: no namespace, so its Log rows, assets and resource keys keep their production names."""
