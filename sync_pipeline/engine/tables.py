"""SQLAlchemy Core tables: the Log database's tables and each entity's source table.

Types are chosen for SQL Server first (NVARCHAR, DATETIME2, UNIQUEIDENTIFIER) and mapped to the
nearest equivalent elsewhere, so the same `Table` objects query production and the local
PostgreSQL, MariaDB and SQLite databases the demo and the tests use.
"""

from __future__ import annotations

from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, mysql

from sync_pipeline.specs.model import EntitySpec, FieldType

TRACKING_TABLE_NAME = "TB_R_SYNC_TRACKING"
SCHEDULER_LOG_TABLE_NAME = "SchedulerLog"
REJECTED_TABLE_NAME = "TB_R_SYNC_REJECTED"
LOCK_TABLE_NAME = "TB_R_SYNC_LOCK"
ROW_HASH_TABLE_NAME = "TB_R_SYNC_ROW_HASH"
DEAD_LETTER_TABLE_NAME = "TB_R_SYNC_DEAD_LETTER"
CURSOR_TABLE_NAME = "TB_R_SYNC_CURSOR"
HISTORY_TABLE_NAME = "TB_R_SYNC_HISTORY"
CONFLICT_TABLE_NAME = "TB_R_SYNC_CONFLICT"

DateTime2 = sa.DateTime().with_variant(mssql.DATETIME2(), "mssql").with_variant(mysql.DATETIME(fsp=6), "mysql")
"""A timestamp with sub-second precision everywhere: DATETIME2 on SQL Server, DATETIME(6) on MariaDB."""

LongText = sa.UnicodeText().with_variant(mssql.NVARCHAR(), "mssql")  # no length: NVARCHAR(max)
"""Unbounded text: NVARCHAR(MAX) on SQL Server (not the deprecated NTEXT), TEXT elsewhere."""

log_metadata = sa.MetaData()

tracking_table = sa.Table(
    TRACKING_TABLE_NAME,
    log_metadata,
    sa.Column("Id", sa.Integer, sa.Identity(start=1, increment=1), primary_key=True),
    sa.Column("EntityType", sa.Unicode(100), nullable=False),
    sa.Column("EntityId", sa.Unicode(255), nullable=False),
    sa.Column("SyncTimestamp", DateTime2, nullable=False),
    sa.Index("UQ_TB_R_SYNC_TRACKING_EntityType_EntityId", "EntityType", "EntityId", unique=True),
)
"""What was already sent: one row per (EntityType, EntityId), written only after a 2xx."""

scheduler_log_table = sa.Table(
    SCHEDULER_LOG_TABLE_NAME,
    log_metadata,
    sa.Column("ID", sa.Uuid, primary_key=True),
    sa.Column("ApplicationName", sa.Unicode(100), nullable=False),
    sa.Column("LogID", sa.Unicode(100), nullable=False),
    sa.Column("LogCategory", sa.Unicode(100), nullable=False),
    sa.Column("Activity", sa.Unicode(255), nullable=False),
    sa.Column("ApplicationModule", sa.Unicode(100), nullable=False),
    sa.Column("IPHostName", sa.Unicode(100), nullable=False),
    sa.Column("Status", sa.Unicode(20), nullable=False),
    sa.Column("AdditionalInformation", LongText, nullable=True),
    sa.Column("CreatedBy", sa.Unicode(100), nullable=False),
    sa.Column("CreatedOn", DateTime2, nullable=False),
    sa.Column("ModifiedBy", sa.Unicode(100), nullable=True),
    sa.Column("ModifiedOn", DateTime2, nullable=True),
    sa.Column("RowStatus", sa.Boolean, nullable=False),
    sa.Column("ExceptionMessage", LongText, nullable=True),
)
"""The existing TAMHR scheduler log: one row per batch API call."""

rejected_table = sa.Table(
    REJECTED_TABLE_NAME,
    log_metadata,
    sa.Column("Id", sa.Integer, sa.Identity(start=1, increment=1), primary_key=True),
    sa.Column("EntityType", sa.Unicode(100), nullable=False),
    sa.Column("EntityId", sa.Unicode(255), nullable=False),
    sa.Column("RejectionCount", sa.Integer, nullable=False),
    sa.Column("HttpResponseCode", sa.Integer, nullable=True),
    sa.Column("Reason", LongText, nullable=False),
    sa.Column("ResponseExcerpt", LongText, nullable=True),
    sa.Column("FirstRejectedOn", DateTime2, nullable=False),
    sa.Column("LastRejectedOn", DateTime2, nullable=False),
    sa.Column("FirstReason", LongText, nullable=True),
    sa.Column("DeadLetteredOn", DateTime2, nullable=True),
    sa.Index("UQ_TB_R_SYNC_REJECTED_EntityType_EntityId", "EntityType", "EntityId", unique=True),
)
"""The retry queue of records: those the API refused one by one (400/422 after splitting), that failed
validation before sending, or (a per-record sink) whose call failed after its retries (5xx, no answer).
One row per record: how many runs it failed (RejectionCount), its first reason and when, the last status,
reason, response and when. Such records stay unsent and are tried again every run, until a per-record
sink's `retries.max_record_attempts` is reached: then DeadLetteredOn is set, and the record is no longer
sent until `sync-pipeline resend` re-queues it (count 0, DeadLetteredOn cleared)."""

lock_table = sa.Table(
    LOCK_TABLE_NAME,
    log_metadata,
    sa.Column("EntityType", sa.Unicode(100), primary_key=True),
    sa.Column("Owner", sa.Unicode(200), nullable=False),
    sa.Column("AcquiredOn", DateTime2, nullable=False),
    sa.Column("ExpiresOn", DateTime2, nullable=False),
)
"""One row per entity being synced right now: a portable lock, so two runs never send the same records."""

row_hash_table = sa.Table(
    ROW_HASH_TABLE_NAME,
    log_metadata,
    sa.Column("EntityType", sa.Unicode(100), nullable=False),
    sa.Column("EntityId", sa.Unicode(255), nullable=False),
    sa.Column("RowHash", sa.CHAR(32), nullable=False),
    sa.Column("ExternalId", sa.Unicode(255), nullable=True),
    sa.Column("SyncTimestamp", DateTime2, nullable=False),
    sa.PrimaryKeyConstraint("EntityType", "EntityId", name="PK_TB_R_SYNC_ROW_HASH"),
)
"""What each record of a create/update sync looked like when last acknowledged: the hash of its mapped
content (32 hex digits) and the receiver's id for it; a batch's lookup is a range of the primary key."""

cursor_table = sa.Table(
    CURSOR_TABLE_NAME,
    log_metadata,
    sa.Column("EntityType", sa.Unicode(100), nullable=False),
    sa.Column("CursorValue", sa.Unicode(100), nullable=False),
    sa.Column("SyncTimestamp", DateTime2, nullable=False),
    sa.PrimaryKeyConstraint("EntityType", name="PK_TB_R_SYNC_CURSOR"),
)
"""The high-water mark of syncs that read only what changed since the last run: one row per entity,
the mark as canonical text, moved only once every record up to it was delivered or quarantined."""


dead_letter_table = sa.Table(
    DEAD_LETTER_TABLE_NAME,
    log_metadata,
    sa.Column("EntityType", sa.Unicode(100), nullable=False),
    sa.Column("Reason", LongText, nullable=False),
    sa.Column("Attempts", sa.Integer, nullable=False),
    sa.Column("FirstFailedOn", DateTime2, nullable=False),
    sa.Column("LastFailedOn", DateTime2, nullable=False),
    sa.Column("RunId", sa.Unicode(64), nullable=True),
    sa.Column("RequeuedAt", DateTime2, nullable=True),
    sa.PrimaryKeyConstraint("EntityType", name="PK_TB_R_SYNC_DEAD_LETTER"),
)
"""Runs that failed after their last retry, one row per EntityType (a customer's: `<EntityType>/<customer>`):
the latest reason, how many attempts in all, when it first and last failed, the last run, and when
`sync-pipeline requeue` asked for a run of it again (cleared when it fails again). A run of it that
succeeds removes its row."""


history_table = sa.Table(
    HISTORY_TABLE_NAME,
    log_metadata,
    sa.Column("Id", sa.Integer, sa.Identity(start=1, increment=1), primary_key=True),
    sa.Column("EntityType", sa.Unicode(100), nullable=False),
    sa.Column("RecordKey", sa.Unicode(255), nullable=False),
    sa.Column("Change", sa.Unicode(20), nullable=False),
    sa.Column("OldValues", LongText, nullable=False),
    sa.Column("NewValues", LongText, nullable=False),
    sa.Column("RunId", sa.Unicode(64), nullable=True),
    sa.Column("ChangedOn", DateTime2, nullable=False),
    sa.Column("AppliedOn", DateTime2, nullable=True),
    sa.Index("IX_TB_R_SYNC_HISTORY_EntityType_RecordKey", "EntityType", "RecordKey"),
    sa.Index("IX_TB_R_SYNC_HISTORY_RunId", "RunId"),
    sa.Index("IX_TB_R_SYNC_HISTORY_ChangedOn", "ChangedOn"),
)
"""Every change a sync made to a stored row of the application's table (`updated`, `deleted`, `restored`):
the old and new values of what changed as JSON (a detail by its hash), when and by which run. AppliedOn is
set once the change is committed: a run that commits all its writes at its end sets it then, and a row
without it belongs to a run that failed or was killed before its commit (its change never happened)."""

conflict_table = sa.Table(
    CONFLICT_TABLE_NAME,
    log_metadata,
    sa.Column("EntityType", sa.Unicode(100), nullable=False),
    sa.Column("RecordKey", sa.Unicode(255), nullable=False),
    sa.Column("Reason", sa.Unicode(400), nullable=False),
    sa.Column("StoredValues", LongText, nullable=False),
    sa.Column("IncomingValues", LongText, nullable=False),
    sa.Column("Seen", sa.Integer, nullable=False),
    sa.Column("FirstSeenOn", DateTime2, nullable=False),
    sa.Column("LastSeenOn", DateTime2, nullable=False),
    sa.Column("RunId", sa.Unicode(64), nullable=True),
    sa.PrimaryKeyConstraint("EntityType", "RecordKey", name="PK_TB_R_SYNC_CONFLICT"),
)
"""Records left unapplied for someone to review: as old as their stored row, or older, yet different. One
row per record: the latest reason and differing values, how often and when it was first and last seen."""


class TableLocation(Protocol):
    """Where a deployment keeps an entity's source table (the settings' `entities.<name>` entry)."""

    @property
    def table_name(self) -> str: ...
    @property
    def schema_name(self) -> str | None: ...
    @property
    def key_column(self) -> str: ...


def _column_type(field_type: FieldType, length: int | None) -> sa.types.TypeEngine[Any]:
    if field_type is FieldType.TEXT:
        return sa.Unicode(length) if length else LongText
    types: dict[FieldType, sa.types.TypeEngine[Any]] = {
        FieldType.GUID: sa.Uuid(as_uuid=True),
        FieldType.INT: sa.Integer(),
        FieldType.DECIMAL: sa.Numeric(18, 4, asdecimal=True),
        FieldType.DATETIME: DateTime2,
        FieldType.BOOL: sa.Boolean(),
    }
    return types[field_type]


def source_table(spec: EntitySpec, where: TableLocation, metadata: sa.MetaData | None = None) -> sa.Table:
    """The entity's source table as this deployment names it, with the model's fields as columns."""
    return sa.Table(
        where.table_name,
        metadata if metadata is not None else sa.MetaData(),
        *(
            sa.Column(
                field.name,
                _column_type(field.type, field.length),
                primary_key=field.name == where.key_column,
                nullable=field.nullable,
            )
            for field in spec.fields
        ),
        schema=where.schema_name,
    )


CREDENTIAL_USE_TABLE_NAME = "TB_R_SYNC_CREDENTIAL_USE"

credential_use_table = sa.Table(
    CREDENTIAL_USE_TABLE_NAME,
    log_metadata,
    sa.Column("Id", sa.Integer, sa.Identity(start=1, increment=1), primary_key=True),
    sa.Column("EntityType", sa.Unicode(100), nullable=False),
    sa.Column("Customer", sa.Unicode(100), nullable=False),
    sa.Column("ClientId", sa.Unicode(100), nullable=False),
    sa.Column("Event", sa.Unicode(20), nullable=False),
    sa.Column("UsedAt", DateTime2, nullable=False),
    sa.Column("Calls", sa.Integer, nullable=False),
    sa.Column("RunId", sa.Unicode(64), nullable=True),
    sa.Index("IX_TB_R_SYNC_CREDENTIAL_USE_EntityType_UsedAt", "EntityType", "UsedAt"),
)
"""Each token a customer's run called with (`<EntityType>/<customer>`): `requested`, `refreshed` after a 401 or
`reused` (fetched earlier in the run), when its first call went, how many calls it carried, which run and
client id. Never a token or a secret."""
