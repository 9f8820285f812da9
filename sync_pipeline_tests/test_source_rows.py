"""No single source row or key blocks an entity, and keys of any column type page correctly (SQLite).

Each bad row (a NULL key, a key that is no GUID, text the driver cannot decode, a timestamp it cannot
parse, a second copy of an ID, text in a boolean) is reported with its reason; every other row goes
out, in full batches.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.batching import NULL_KEY_ENTITY_ID
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME

from .conftest import SettingsFactory, SyncDatabases, entity_id
from .drifted_sources import create_drifted_table, insert_with_keys, sync_drifted
from .fakes import RecordingApiClient

USERS = ENTITIES_BY_NAME["Users"]


def text_guids(count: int) -> list[str]:
    """`count` distinct GUIDs as sorted lower-case text: their order is the order a text column pages in."""
    return sorted(str(uuid.uuid5(uuid.NAMESPACE_OID, f"key {n}")) for n in range(count))


def plant_sql(databases: SyncDatabases, entity: str, number: int, assignment: str) -> str:
    """Run `SET <assignment>` on one row of the entity's (model-typed) table; return its EntityId."""
    table = databases.source_tables[entity]
    key = entity_id(ENTITIES_BY_NAME[entity], number)
    with databases.source_engine(entity).begin() as conn:
        conn.execute(sa.text(f'UPDATE "{table.name}" SET {assignment} WHERE "Id" = :id'), {"id": key.hex})
    return str(key)


def test_a_guid_key_stored_as_text_in_upper_and_lower_case_is_paged_past_the_first_page(
    databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=3)
    keys = [key.upper() if number % 2 else key for number, key in enumerate(text_guids(11))]
    table = create_drifted_table(databases.source_engine("Users"), "Users", settings, sa.String(36))
    insert_with_keys(databases.source_engine("Users"), table, "Users", keys)
    api = RecordingApiClient()

    report = sync_drifted("Users", settings, databases.source_engine("Users"), databases.log, api)

    url = settings.endpoint_url("Users")
    assert sorted(api.accepted_ids(url)) == sorted(key.lower() for key in keys)
    assert api.call_sizes(url) == [3, 3, 3, 2]
    assert report.succeeded and (report.rows_found, report.sent) == (11, 11)
    assert databases.tracked_ids("Users") == {key.lower() for key in keys}


def test_a_null_key_is_rejected_and_the_other_rows_go_out(
    databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=3)
    keys = text_guids(5)
    table = create_drifted_table(databases.source_engine("Users"), "Users", settings, sa.String(36))
    insert_with_keys(databases.source_engine("Users"), table, "Users", [None, None, *keys])  # SQLite sorts NULL first
    api = RecordingApiClient()

    report = sync_drifted("Users", settings, databases.source_engine("Users"), databases.log, api)

    assert sorted(api.accepted_ids(settings.endpoint_url("Users"))) == keys
    assert (report.rows_found, report.sent, report.rejected) == (7, 5, 2)
    assert report.stopped_because is None and not report.succeeded
    (rejection,) = databases.rejected_rows()
    assert rejection["EntityId"] == NULL_KEY_ENTITY_ID
    assert "key column Id is NULL in 2 source row(s)" in rejection["Reason"]


def test_a_value_that_is_not_a_guid_in_a_guid_key_is_rejected_and_the_rest_goes(
    databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=3)
    keys = text_guids(6)
    table = create_drifted_table(databases.source_engine("Users"), "Users", settings, sa.String(36))
    insert_with_keys(databases.source_engine("Users"), table, "Users", [*keys[:4], "ORG-NOT-A-GUID", *keys[4:]])
    api = RecordingApiClient()

    report = sync_drifted("Users", settings, databases.source_engine("Users"), databases.log, api)

    assert sorted(api.accepted_ids(settings.endpoint_url("Users"))) == keys
    assert api.call_sizes(settings.endpoint_url("Users")) == [3, 3]
    assert (report.sent, report.rejected, report.stopped_because) == (6, 1, None)
    (rejection,) = databases.rejected_rows()
    assert rejection["EntityId"] == "ORG-NOT-A-GUID"
    assert "key column Id" in rejection["Reason"] and "not a GUID" in rejection["Reason"]


@pytest.mark.parametrize(
    ("entity", "assignment", "column", "driver_says"),
    [
        pytest.param("Users", "\"Name\" = CAST(x'ff41' AS TEXT)", "Name", "decode", id="text that is not UTF-8"),
        pytest.param("OrgObject", "\"StartDate\" = 'not a date'", "StartDate", "isoformat", id="bad DATETIME"),
    ],
)
def test_a_row_the_driver_cannot_read_is_rejected_with_its_reason_and_the_rest_of_its_page_goes(
    entity: str,
    assignment: str,
    column: str,
    driver_says: str,
    databases: SyncDatabases,
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(batch_size=3)
    databases.insert_rows(entity, 7)
    bad = plant_sql(databases, entity, 4, assignment)
    api = RecordingApiClient()

    report = sync_drifted(entity, settings, databases.source_engine(entity), databases.log, api)

    sent = api.accepted_ids(settings.endpoint_url(entity))
    assert sorted(sent) == sorted(str(entity_id(ENTITIES_BY_NAME[entity], n)) for n in range(7) if n != 4)
    assert api.call_sizes(settings.endpoint_url(entity)) == [3, 3]
    assert (report.rows_found, report.sent, report.rejected, report.stopped_because) == (7, 6, 1, None)
    (rejection,) = databases.rejected_rows()
    assert rejection["EntityId"] == bad
    assert f"column {column}:" in rejection["Reason"] and driver_says in rejection["Reason"]


def test_a_duplicate_id_is_sent_once_and_each_copy_reported_also_across_a_page_boundary(
    databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=3)
    k = text_guids(6)
    # Pages of 3: [k0 k1 k2] [k2 k3 k4] ...: the second k2 starts the next page; k4 has a copy within a page.
    keys = [k[0], k[1], k[2], k[2], k[3], k[4], k[4].upper(), k[5]]
    table = create_drifted_table(databases.source_engine("Users"), "Users", settings, sa.String(36))
    insert_with_keys(databases.source_engine("Users"), table, "Users", keys)
    api = RecordingApiClient()

    report = sync_drifted("Users", settings, databases.source_engine("Users"), databases.log, api)

    assert sorted(api.accepted_ids(settings.endpoint_url("Users"))) == k
    assert (report.rows_found, report.sent, report.rejected, report.stopped_because) == (8, 6, 2, None)
    rejected = databases.rejected_rows()
    assert sorted(row["EntityId"] for row in rejected) == sorted([k[2], k[4]])
    assert all("duplicate" in row["Reason"] and "Id" in row["Reason"] for row in rejected)
    assert databases.tracked_ids("Users") == set(k)

    again = RecordingApiClient()
    second = sync_drifted("Users", settings, databases.source_engine("Users"), databases.log, again)

    assert again.calls(settings.endpoint_url("Users")) == []
    assert (second.already_tracked, second.sent, second.rejected, second.stopped_because) == (6, 0, 2, None)


def test_a_key_repeated_more_than_a_page_s_worth_still_moves_on_to_the_next_keys(
    databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=3)
    k = text_guids(3)
    table = create_drifted_table(databases.source_engine("Users"), "Users", settings, sa.String(36))
    insert_with_keys(databases.source_engine("Users"), table, "Users", [k[0], *[k[1]] * 7, k[2]])
    api = RecordingApiClient()

    report = sync_drifted("Users", settings, databases.source_engine("Users"), databases.log, api)

    assert sorted(api.accepted_ids(settings.endpoint_url("Users"))) == k
    assert report.stopped_because is None and report.rejected >= 2
    assert {row["EntityId"] for row in databases.rejected_rows()} == {k[1]}


def test_ten_thousand_and_one_valid_rows_and_one_invalid_go_out_in_full_batches_and_the_dry_run_counts_alike(
    databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=3000)
    databases.insert_rows("Users", 10_002)
    in_second_page = sorted(range(10_002), key=lambda n: entity_id(USERS, n).hex)[4000]
    bad = plant_sql(databases, "Users", in_second_page, "\"IsActive\" = 'yes'")
    source = databases.source_engine("Users")

    dry = sync_drifted("Users", settings, source, databases.log, RecordingApiClient(), dry_run=True)
    api = RecordingApiClient()
    report = sync_drifted("Users", settings, source, databases.log, api)

    assert api.call_sizes(settings.endpoint_url("Users")) == [3000, 3000, 3000, 1001]
    assert (report.sent, report.rejected, report.rejected_ids) == (10_001, 1, [bad])
    assert dry.preview is not None
    assert (dry.preview.would_send, dry.preview.would_refuse, dry.preview.batches) == (10_001, 1, 4)
    assert dry.preview.refusals == [f"{bad}: not sent: field IsActive: expected an integer, got str"]


def test_text_in_a_sqlite_boolean_is_refused_naming_the_field_and_real_booleans_go_as_they_are(
    databases: SyncDatabases, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=3)
    events = ENTITIES_BY_NAME["EventsCalendar"]
    databases.insert_rows("EventsCalendar", 5)
    refused = {plant_sql(databases, "EventsCalendar", 1, "\"RowStatus\" = 'false'")}
    refused.add(plant_sql(databases, "EventsCalendar", 2, "\"RowStatus\" = 'no'"))
    api = RecordingApiClient()

    report = sync_drifted("EventsCalendar", settings, databases.source_engine("EventsCalendar"), databases.log, api)

    received = api.accepted_records(settings.endpoint_url("EventsCalendar"))
    sent = {record["Id"]: record["RowStatus"] for record in received}
    assert sent == {str(entity_id(events, n)): n % 2 == 0 for n in (0, 3, 4)}
    assert (report.sent, report.rejected) == (3, 2)
    rejected = databases.rejected_rows()
    assert {row["EntityId"] for row in rejected} == refused
    assert all("field RowStatus: expected a boolean" in row["Reason"] for row in rejected)
