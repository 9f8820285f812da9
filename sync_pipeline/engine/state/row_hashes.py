"""TB_R_SYNC_ROW_HASH: the "changed since last sent" state of syncs that create, update or skip.

A record's state is the hash of its mapped content as the receiver last acknowledged it, and the
receiver's id for it. Before a batch is sent it is classified (no row: new, to create; another hash:
changed, to update by its external id; the same hash: unchanged, no call) by lookups of at most
2,000 IDs (SQL Server's 2,100-parameter rule; one array on PostgreSQL); after the acknowledgement
its rows are upserted with each dialect's own statement: MERGE, ON CONFLICT, ON DUPLICATE KEY.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.mapping.payload import PayloadError, explain_unencodable
from sync_pipeline.engine.state.tracking import DeliveredButUntracked, TrackingUnavailable, chunks, utc_now
from sync_pipeline.engine.state.tracking_sql import IDS_PER_ARRAY, MAX_IDS_PER_LOOKUP
from sync_pipeline.engine.tables import DateTime2, row_hash_table

ROW_HASH_DIGEST_BYTES = 16
"""blake2b-128: 32 hex digits; a collision among a billion records has odds of about 1 in 10^20."""

_table = row_hash_table
_KEY = [_table.c.EntityType, _table.c.EntityId]


def row_hash(record: Mapping[str, Any]) -> str:
    """The record's content hash: blake2b-128 of its JSON with sorted keys, as 32 hex digits.

    The same in every process and whatever the key order (no Python `hash()`, which is salted per process).
    """
    try:
        encoded = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an integer beyond 64 bits, a non-text key
        raise PayloadError(explain_unencodable(dict(record))) from None
    return hashlib.blake2b(encoded, digest_size=ROW_HASH_DIGEST_BYTES).hexdigest()


@dataclass(frozen=True)
class RowChanges:
    """A batch classified against TB_R_SYNC_ROW_HASH, each part in the batch's order."""

    new: list[str] = field(default_factory=list)
    """EntityIds never acknowledged: to create."""
    changed: dict[str, str | None] = field(default_factory=dict)
    """EntityId -> the receiver's id (None if it gave none) of records whose content changed: to update."""
    unchanged: list[str] = field(default_factory=list)
    """EntityIds whose content is as last acknowledged: no call."""


class RowHashStore:
    """Reads and writes TB_R_SYNC_ROW_HASH in the Log database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._lookup, self._ids_per_lookup = stored_hashes_lookup(engine.dialect.name)

    def classify(self, entity_type: str, rows: Sequence[tuple[str, str]]) -> RowChanges:
        """Split a batch of (EntityId, row hash) into new, changed (with the external id) and unchanged."""
        stored = self._stored(entity_type, [entity_id for entity_id, _ in rows])
        changes = RowChanges()
        for entity_id, hash_now in rows:
            found = stored.get(entity_id)
            if found is None:
                changes.new.append(entity_id)
            elif found[0] == hash_now:
                changes.unchanged.append(entity_id)
            else:
                changes.changed[entity_id] = found[1]
        return changes

    def acknowledged(self, entity_type: str, entity_ids: Sequence[str]) -> set[str]:
        """Those of `entity_ids` the receiver has acknowledged for `entity_type` (a row hash is kept)."""
        return set(self._stored(entity_type, entity_ids))

    def _stored(self, entity_type: str, entity_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """The stored (row hash, external id) of each of `entity_ids` that has one, chunked within the
        dialect's parameter limits."""
        stored: dict[str, tuple[str, str | None]] = {}
        try:
            with self.engine.connect() as conn:
                for chunk in chunks(list(entity_ids), self._ids_per_lookup):
                    params = {"entity_type": entity_type, "entity_ids": list(chunk)}
                    for entity_id, stored_hash, external_id in conn.execute(self._lookup, params):
                        stored[entity_id] = (stored_hash, external_id)
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot read {_table.name}: {describe_db_error(exc)}") from exc
        return stored

    def record_sent(self, entity_type: str, rows: Sequence[tuple[str, str, str | None]]) -> None:
        """Keep (EntityId, row hash, external id) of acknowledged records; an external id of None keeps
        the one already known (an update's answer rarely repeats it)."""
        try:
            with self.engine.begin() as conn:
                upsert_row_hashes(conn, entity_type, rows, utc_now())
        except sa.exc.SQLAlchemyError as exc:
            raise DeliveredButUntracked(
                f"{len(rows)} records were acknowledged but their row hashes could not be written to {_table.name} "
                f"(the next run sends them again, new ones as creates): {describe_db_error(exc)}",
                len(rows),
            ) from exc


def upsert_row_hashes(
    conn: sa.Connection, entity_type: str, rows: Sequence[tuple[str, str, str | None]], now: dt.datetime
) -> None:
    """Insert or update the rows of `entity_type` on `conn`, inside the transaction the caller holds."""
    latest = {entity_id: (hash_now, external_id) for entity_id, hash_now, external_id in rows}
    if not latest:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        params = {
            "entity_type": entity_type,
            "entity_ids": list(latest),
            "row_hashes": [hash_now for hash_now, _ in latest.values()],
            "external_ids": [external_id for _, external_id in latest.values()],
            "now": now,
        }
        conn.execute(_POSTGRESQL_UPSERT, params)
        return
    if dialect not in _UPSERTS:
        raise ValueError(f"no row hash upsert for the {dialect} dialect (known: postgresql, {', '.join(_UPSERTS)})")
    conn.execute(
        _UPSERTS[dialect],
        [
            {
                "EntityType": entity_type,
                "EntityId": entity_id,
                "RowHash": hash_now,
                "ExternalId": external_id,
                "SyncTimestamp": now,
            }
            for entity_id, (hash_now, external_id) in latest.items()
        ],
    )


def stored_hashes_lookup(dialect_name: str) -> tuple[sa.Select[Any], int]:
    """The lookup of a chunk of IDs' stored hash and external id (binds entity_type, entity_ids) and its
    chunk size: on PostgreSQL one array parameter, joined as `unnest` (an `IN` list of 2,000 is planned
    as a sequential scan), elsewhere `IN` lists of 2,000, 2,001 parameters with EntityType."""
    query = sa.select(_table.c.EntityId, _table.c.RowHash, _table.c.ExternalId).where(
        _table.c.EntityType == sa.bindparam("entity_type")
    )
    if dialect_name == "postgresql":
        ids = sa.bindparam("entity_ids", type_=postgresql.ARRAY(sa.Unicode()))
        page = sa.func.unnest(ids).table_valued("id").render_derived(name="page")
        return query.join(page, _table.c.EntityId == page.c.id), IDS_PER_ARRAY
    return query.where(_table.c.EntityId.in_(sa.bindparam("entity_ids", expanding=True))), MAX_IDS_PER_LOOKUP


def _updated_columns(incoming: Any) -> dict[str, Any]:
    """What an upsert sets on a row already there: the new hash and time, the new external id unless null."""
    return {
        "RowHash": incoming.RowHash,
        "ExternalId": sa.func.coalesce(incoming.ExternalId, _table.c.ExternalId),
        "SyncTimestamp": incoming.SyncTimestamp,
    }


def _postgresql_upsert() -> sa.Insert:
    """One statement per batch: the rows as three array parameters, unnested, then ON CONFLICT."""
    page = (
        sa.func.unnest(
            sa.bindparam("entity_ids", type_=postgresql.ARRAY(sa.Unicode())),
            sa.bindparam("row_hashes", type_=postgresql.ARRAY(sa.Unicode())),
            sa.bindparam("external_ids", type_=postgresql.ARRAY(sa.Unicode())),
        )
        .table_valued("entity_id", "row_hash", "external_id")
        .render_derived(name="page")
    )
    rows = sa.select(
        sa.bindparam("entity_type", type_=sa.Unicode()),
        page.c.entity_id,
        page.c.row_hash,
        page.c.external_id,
        sa.bindparam("now", type_=DateTime2),
    )
    insert = postgresql.insert(_table).from_select([column.name for column in _table.columns], rows)
    return insert.on_conflict_do_update(index_elements=_KEY, set_=_updated_columns(insert.excluded))


def _sqlite_upsert() -> sa.Insert:
    insert = sqlite.insert(_table)
    return insert.on_conflict_do_update(index_elements=_KEY, set_=_updated_columns(insert.excluded))


def _mysql_upsert() -> sa.Insert:
    insert = mysql.insert(_table)
    return insert.on_duplicate_key_update(_updated_columns(insert.inserted))


_MSSQL_MERGE = sa.text(
    f"MERGE INTO {_table.name} WITH (HOLDLOCK) AS target "
    "USING (VALUES (:EntityType, :EntityId, :RowHash, :ExternalId, :SyncTimestamp)) "
    "AS source (EntityType, EntityId, RowHash, ExternalId, SyncTimestamp) "
    "ON target.EntityType = source.EntityType AND target.EntityId = source.EntityId "
    "WHEN MATCHED THEN UPDATE SET RowHash = source.RowHash, "
    "ExternalId = COALESCE(source.ExternalId, target.ExternalId), SyncTimestamp = source.SyncTimestamp "
    "WHEN NOT MATCHED THEN INSERT (EntityType, EntityId, RowHash, ExternalId, SyncTimestamp) "
    "VALUES (source.EntityType, source.EntityId, source.RowHash, source.ExternalId, source.SyncTimestamp);"
).bindparams(*(sa.bindparam(column.name, type_=column.type) for column in _table.columns))
"""SQL Server's upsert, one row per execution (an executemany: pyodbc fast_executemany sends them as one
array); HOLDLOCK keeps two MERGEs of one new key from both inserting it."""

_POSTGRESQL_UPSERT = _postgresql_upsert()
_UPSERTS: dict[str, sa.Executable] = {
    "mssql": _MSSQL_MERGE,
    "mysql": _mysql_upsert(),
    "mariadb": _mysql_upsert(),
    "sqlite": _sqlite_upsert(),
}
"""Per dialect but PostgreSQL's, the upsert executed once per row (as an executemany)."""
