"""One canonical text form for EntityId, whatever the database driver hands back.

SQL Server's pyodbc returns GUIDs as upper-case strings (or `uuid.UUID`), PostgreSQL as `uuid.UUID`,
MariaDB and SQLite as 32 hex digits. The tracking table must hold exactly one form, or the same
record would look new on every run: the lower-case hyphenated form .NET's `Guid.ToString()` writes.
"""

from __future__ import annotations

import uuid

from sync_pipeline.entities import FieldType


class InvalidEntityId(ValueError):
    """A key value that has no canonical EntityId form (NULL, or not a GUID in a GUID key)."""


def canonical_guid(value: object) -> str:
    """`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lower case, from a UUID, str or 16 raw bytes."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes) and len(value) == 16:
        # SQL Server's uniqueidentifier bytes are little-endian in the first three groups.
        return str(uuid.UUID(bytes_le=value))
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            pass
    raise InvalidEntityId(f"not a GUID: {value!r}")


def canonical_entity_id(value: object, key_type: FieldType) -> str:
    """The EntityId written to and compared with TB_R_SYNC_TRACKING for a source key value."""
    if value is None:
        raise InvalidEntityId("key value is NULL")
    if key_type is FieldType.GUID:
        return canonical_guid(value)
    return str(value)
