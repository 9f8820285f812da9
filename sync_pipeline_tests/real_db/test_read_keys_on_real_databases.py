"""The retry queue's records read again by key (`sql_table.read_keys`): GUID, integer and text keys, as each
database keeps them (a native uuid on PostgreSQL, 32 hex digits elsewhere), on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.sources.sql_table import KEYS_PER_READ, read_keys
from sync_pipeline.engine.tables import source_table
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import EntitySettings
from sync_pipeline.specs.model import EntitySpec, Field, FieldType
from sync_pipeline_tests.real_db.conftest import SERVERS, fresh_databases

pytestmark = pytest.mark.real_db


def spec_keyed_by(key_type: FieldType) -> EntitySpec:
    return EntitySpec(
        "Orders",
        "orders",
        "default_db",
        (
            Field("Id", key_type, length=40 if key_type is FieldType.TEXT else None),
            Field("Title", FieldType.TEXT, length=40),
        ),
    )


@pytest.fixture(params=["sqlite", *sorted(SERVERS)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        made = create_sync_engine(f"sqlite:///{tmp_path / 'source.db'}")
        yield made
        made.dispose()
        return
    with fresh_databases(request.param, ["source_db"]) as urls:
        made = create_sync_engine(urls["source_db"])
        yield made
        made.dispose()


def test_queued_guid_keys_are_read_back_whatever_form_the_database_keeps_them_in(engine: sa.Engine) -> None:
    table = source_table(spec_keyed_by(FieldType.GUID), EntitySettings(table="ORDERS"))
    table.metadata.create_all(engine)
    ids = [uuid.UUID(int=n * 7919 + 1) for n in range(1500)]
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"Id": value, "Title": f"order {n}"} for n, value in enumerate(ids)])
    wanted = [str(value).upper() if n % 2 else str(value) for n, value in enumerate(ids[:1200])]

    pages = list(read_keys(engine, table, ["Id", "Title"], "Id", [*wanted, "not-a-guid", str(uuid.UUID(int=3))]))

    found = {uuid.UUID(str(row[0])) for page in pages for row in page.rows}
    assert found == set(ids[:1200])
    assert len(pages) >= 1200 * 2 // KEYS_PER_READ, "each chunk binds fewer than KEYS_PER_READ values"


def test_queued_integer_and_text_keys_are_read_back(engine: sa.Engine) -> None:
    for key_type, make in ((FieldType.INT, int), (FieldType.TEXT, lambda n: f"WO-{n:05d}")):
        table = source_table(spec_keyed_by(key_type), EntitySettings(table=f"ORDERS_{key_type.value.upper()}"))
        table.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(table), [{"Id": make(n), "Title": "t"} for n in range(1, 51)])

        rows = [
            row
            for page in read_keys(engine, table, ["Id", "Title"], "Id", [str(make(3)), str(make(50)), "x"])
            for row in page.rows
        ]

        assert sorted(str(row[0]) for row in rows) == sorted([str(make(3)), str(make(50))])
