"""Deterministic generated source data for any entity spec, and the Log tables it is synced into.

Values come from the field types alone, so a new entity spec gets demo data without new code.
The same seed gives the same rows on every machine, which keeps the demo's figures reproducible.
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.tables import log_metadata, source_table
from sync_pipeline.settings import EntitySettings
from sync_pipeline.specs.model import EntitySpec, Field, FieldType

INSERT_CHUNK = 500
_EPOCH = dt.datetime(2020, 1, 1)


def _value(field: Field, index: int, rng: random.Random) -> Any:
    if field.nullable and rng.random() < 0.2:
        return None
    if field.type is FieldType.GUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)
    if field.type is FieldType.INT:
        return rng.randint(0, 1) if field.name.startswith("Is") else rng.randint(0, 12)
    if field.type is FieldType.DECIMAL:
        return decimal.Decimal(rng.randint(0, 10_000)) / 100
    if field.type is FieldType.DATETIME:
        return _EPOCH + dt.timedelta(minutes=rng.randint(0, 5 * 365 * 24 * 60), microseconds=rng.randint(0, 999) * 1000)
    if field.type is FieldType.BOOL:
        return rng.random() < 0.9
    text = f"{field.name} {index:07d}"
    return text[: field.length] if field.length else text + " - generated demo text"


def generated_rows(spec: EntitySpec, count: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """`count` rows for `spec`, the same for the same seed; keys are unique GUIDs."""
    rng = random.Random(f"{spec.name}:{seed}")
    for index in range(count):
        yield {field.name: _value(field, index, rng) for field in spec.fields}


def create_source_table(
    engine: sa.Engine,
    spec: EntitySpec,
    where: EntitySettings,
    extra_columns: Sequence[tuple[str, sa.types.TypeEngine[Any]]] = (),
) -> sa.Table:
    """Create (if missing) the entity's source table as the settings name it, with nullable `extra_columns`
    the entity does not read (what another entity writes back into the table)."""
    table = source_table(spec, where)
    for name, column_type in extra_columns:
        table.append_column(sa.Column(name, column_type, nullable=True))
    table.metadata.create_all(engine)
    return table


def seed_entity(engine: sa.Engine, spec: EntitySpec, where: EntitySettings, count: int, seed: int = 0) -> int:
    """Create the source table and fill it with `count` generated rows; returns the count."""
    table = create_source_table(engine, spec, where)
    chunk: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row in generated_rows(spec, count, seed):
            chunk.append(row)
            if len(chunk) == INSERT_CHUNK:
                conn.execute(sa.insert(table), chunk)
                chunk = []
        if chunk:
            conn.execute(sa.insert(table), chunk)
    return count


def create_log_tables(engine: sa.Engine) -> None:
    """Create the Log tables that are missing (TB_R_SYNC_TRACKING, SchedulerLog, TB_R_SYNC_REJECTED,
    TB_R_SYNC_LOCK) from the metadata (non-production databases)."""
    log_metadata.create_all(engine)
