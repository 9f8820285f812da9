"""Reading the source on the real PostgreSQL and MariaDB: text GUID keys page past the first page,
and no single bad row (NULL key, key that is no GUID, copy of an ID, unreadable timestamp) blocks an entity."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.batching import NULL_KEY_ENTITY_ID
from sync_pipeline.engine.tables import rejected_table, source_table, tracking_table
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.settings import Settings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME
from sync_pipeline_tests.conftest import SettingsFactory, entity_id, source_row
from sync_pipeline_tests.drifted_sources import create_drifted_table, insert_with_keys, sync_drifted
from sync_pipeline_tests.fakes import RecordingApiClient
from sync_pipeline_tests.real_db.conftest import RealDatabases

pytestmark = pytest.mark.real_db


@dataclass
class Engines:
    """The source and Log engines of one test on one real server."""

    backend: str
    source: sa.Engine
    log: sa.Engine
    settings: Settings

    def rejected(self) -> list[sa.RowMapping]:
        with self.log.connect() as conn:
            return list(conn.execute(sa.select(rejected_table).order_by(rejected_table.c.Id)).mappings())

    def tracked(self, entity: str) -> set[str]:
        query = sa.select(tracking_table.c.EntityId).where(tracking_table.c.EntityType == entity)
        with self.log.connect() as conn:
            return set(conn.execute(query).scalars())


@pytest.fixture
def engines(real_databases: RealDatabases, make_settings: SettingsFactory) -> Iterator[Engines]:
    """Engines on a fresh default and Log database, Log tables created; pages of 3 rows."""
    source = create_sync_engine(real_databases.urls["default_db"])
    log = create_sync_engine(real_databases.urls["log_db"])
    create_log_tables(log)
    yield Engines(real_databases.backend, source, log, make_settings(batch_size=3))
    source.dispose()
    log.dispose()


def text_guids(count: int) -> list[str]:
    """`count` distinct GUIDs as lower-case text."""
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"mdm/{n}")) for n in range(count)]


@pytest.mark.parametrize("key_type", [sa.String(36), sa.CHAR(36)], ids=["VARCHAR(36)", "CHAR(36)"])
def test_guid_keys_stored_as_text_in_upper_and_lower_case_are_all_sent_over_many_pages(
    engines: Engines, key_type: sa.types.TypeEngine[str]
) -> None:
    keys = [key.upper() if number % 2 else key for number, key in enumerate(text_guids(11))]
    table = create_drifted_table(engines.source, "Users", engines.settings, key_type)
    insert_with_keys(engines.source, table, "Users", keys)
    api = RecordingApiClient()

    report = sync_drifted("Users", engines.settings, engines.source, engines.log, api)

    url = engines.settings.endpoint_url("Users")
    assert report.stopped_because is None, report.stopped_because
    assert sorted(api.accepted_ids(url)) == sorted(key.lower() for key in keys)
    assert api.call_sizes(url) == [3, 3, 3, 2]
    assert report.succeeded and engines.tracked("Users") == {key.lower() for key in keys}


def test_null_keys_a_key_that_is_no_guid_and_a_copy_are_rejected_and_every_other_row_goes_out(
    engines: Engines,
) -> None:
    keys = text_guids(7)
    table = create_drifted_table(engines.source, "Users", engines.settings, sa.String(36))
    insert_with_keys(engines.source, table, "Users", [None, *keys, "not-a-guid", keys[3], None])
    api = RecordingApiClient()

    report = sync_drifted("Users", engines.settings, engines.source, engines.log, api)

    assert report.stopped_because is None, report.stopped_because
    assert sorted(api.accepted_ids(engines.settings.endpoint_url("Users"))) == sorted(keys)
    assert (report.rows_found, report.sent, report.rejected) == (11, 7, 4)
    reasons = {row["EntityId"]: row["Reason"] for row in engines.rejected()}
    assert set(reasons) == {NULL_KEY_ENTITY_ID, "not-a-guid", keys[3]}
    assert "key column Id is NULL in 2 source row(s)" in reasons[NULL_KEY_ENTITY_ID]
    assert "not a GUID" in reasons["not-a-guid"]
    assert "duplicate" in reasons[keys[3]]
    assert engines.tracked("Users") == set(keys)


UNREADABLE_TIMESTAMP = {
    # PostgreSQL holds 'infinity'; psycopg cannot make a datetime of it and fails the whole fetch.
    "postgresql": ("'infinity'", "timestamp too large"),
    # MariaDB holds a zero date where sql_mode allows it; PyMySQL hands it over as text.
    "mariadb": ("'0000-00-00 00:00:00'", "expected a timestamp, got str"),
}


def test_a_timestamp_no_datetime_can_hold_is_rejected_naming_the_column_and_the_rest_goes_out(
    engines: Engines,
) -> None:
    spec = ENTITIES_BY_NAME["OrgObject"]
    table = source_table(spec, engines.settings.entities["OrgObject"])
    table.metadata.create_all(engines.source)
    with engines.source.begin() as conn:
        conn.execute(sa.insert(table), [source_row(spec, number) for number in range(7)])
        if engines.backend == "mariadb":
            conn.execute(sa.text("SET SESSION sql_mode = ''"))
        value, reason = UNREADABLE_TIMESTAMP[engines.backend]
        conn.execute(sa.update(table).where(table.c.Id == entity_id(spec, 4)).values(StartDate=sa.text(value)))
    api = RecordingApiClient()

    report = sync_drifted("OrgObject", engines.settings, engines.source, engines.log, api)

    sent = api.accepted_ids(engines.settings.endpoint_url("OrgObject"))
    assert sorted(sent) == sorted(str(entity_id(spec, number)) for number in range(7) if number != 4)
    assert (report.sent, report.rejected, report.stopped_because) == (6, 1, None)
    (rejection,) = engines.rejected()
    assert rejection["EntityId"] == str(entity_id(spec, 4))
    assert "StartDate" in rejection["Reason"] and reason in rejection["Reason"]
