"""Records are checked before sending: a value is sent exactly as the source holds it, or refused naming the field."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import uuid
import warnings
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.batching import ScanCounts, untracked_batches
from sync_pipeline.engine.mapping.payload import RecordBuilder
from sync_pipeline.engine.sinks.http_batch import BatchSender, DeliveryCounts
from sync_pipeline.engine.sources.sql_table import SourcePage
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.orchestration.sync_assets import delivery_policy
from sync_pipeline.settings import Settings
from sync_pipeline.specs.model import FieldType
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME

from .conftest import EntitySync, SyncDatabases, entity_id, source_row
from .fakes import RecordingApiClient, ValidatingApiClient


def key_of(entity: str, number: int) -> str:
    """The canonical EntityId of row `number` of `entity`."""
    return str(entity_id(ENTITIES_BY_NAME[entity], number))


def plant(databases: SyncDatabases, entity: str, number: int, field: str, value: object) -> object:
    """Store `value` in one source row's field through its typed column; return what the source now holds."""
    table = databases.source_tables[entity]
    key = table.c.Id == entity_id(ENTITIES_BY_NAME[entity], number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.exc.SAWarning)  # SQLite has no DECIMAL: it stores a float, and says so
        with databases.source_engine(entity).begin() as conn:
            conn.execute(sa.update(table).where(key).values({field: value}))
        with databases.source_engine(entity).connect() as conn:
            return conn.execute(sa.select(table.c[field]).where(key)).scalar_one()


def plant_raw(databases: SyncDatabases, entity: str, number: int, field: str, value: object) -> None:
    """Store `value` as SQLite takes it, bypassing the column's type (SQLite keeps whatever it is given)."""
    table = databases.source_tables[entity]
    with databases.source_engine(entity).begin() as conn:
        conn.execute(
            sa.text(f'UPDATE "{table.name}" SET "{field}" = :value WHERE "Id" = :id'),
            {"value": value, "id": entity_id(ENTITIES_BY_NAME[entity], number).hex},
        )


def allow_nulls(databases: SyncDatabases, entity: str) -> None:
    """Recreate the entity's (empty) source table with every non-key column nullable, as a drifted schema might be."""
    table = databases.source_tables[entity]
    relaxed = sa.Table(
        table.name,
        sa.MetaData(),
        *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=not c.primary_key) for c in table.columns),
    )
    with databases.source_engine(entity).begin() as conn:
        table.drop(conn)
        relaxed.create(conn)


def assert_refused_naming(databases: SyncDatabases, entity_id_text: str, field: str) -> None:
    """The record is kept as refused before sending, with a reason that names `field`."""
    (rejection,) = [row for row in databases.rejected_rows() if row["EntityId"] == entity_id_text]
    assert rejection["HttpResponseCode"] is None, "refused before sending, not by the API"
    assert field in rejection["Reason"], rejection["Reason"]


def test_a_null_in_a_required_field_is_not_sent_and_is_kept_naming_the_field(
    databases: SyncDatabases, run_sync: EntitySync, api: RecordingApiClient, settings: Settings
) -> None:
    allow_nulls(databases, "Users")
    databases.insert_rows("Users", 3)
    plant_raw(databases, "Users", 1, "Name", None)
    bad = key_of("Users", 1)

    report = run_sync("Users")

    assert bad not in api.accepted_ids(settings.endpoint_url("Users"))
    assert (report.sent, report.rejected, report.failed, report.rejected_ids) == (2, 1, 0, [bad])
    assert databases.tracked_ids("Users") == {key_of("Users", 0), key_of("Users", 2)}
    assert_refused_naming(databases, bad, "Name")
    assert "NULL" in databases.rejected_rows()[0]["Reason"]


def test_a_refused_row_that_is_corrected_is_sent_and_tracked_by_the_next_run(
    databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    allow_nulls(databases, "Users")
    databases.insert_rows("Users", 3)
    plant_raw(databases, "Users", 1, "Name", None)
    run_sync("Users")
    plant_raw(databases, "Users", 1, "Name", "Name fixed")

    later = RecordingApiClient()
    report = run_sync("Users", api=later)

    (record,) = later.accepted_records(settings.endpoint_url("Users"))
    assert (record["Id"], record["Name"]) == (key_of("Users", 1), "Name fixed")
    assert (report.already_tracked, report.sent, report.rejected) == (2, 1, 0)
    assert len(databases.tracked_ids("Users")) == 3


@pytest.mark.parametrize(
    ("entity", "field", "value"),
    [
        pytest.param("Users", "IsActive", 1.5, id="a fraction in an integer field"),
        pytest.param("Users", "Name", b"\x00\xff", id="bytes in a text field"),
        pytest.param("ActualOrg", "Staffing", 1e999, id="infinity in a decimal field"),
        pytest.param("ActualOrg", "Staffing", -1e999, id="minus infinity in a decimal field"),
    ],
)
def test_a_stored_value_of_the_wrong_kind_is_refused_naming_the_field_and_the_rest_of_the_batch_goes(
    entity: str,
    field: str,
    value: object,
    databases: SyncDatabases,
    run_sync: EntitySync,
    api: RecordingApiClient,
    settings: Settings,
) -> None:
    databases.insert_rows(entity, 3)
    plant_raw(databases, entity, 1, field, value)

    report = run_sync(entity)

    url = settings.endpoint_url(entity)
    assert sorted(api.accepted_ids(url)) == sorted([key_of(entity, 0), key_of(entity, 2)])
    assert (report.sent, report.rejected, report.failed) == (2, 1, 0)
    assert_refused_naming(databases, key_of(entity, 1), field)


EDGE_VALUES = [
    pytest.param(
        "ActualEntity",
        "ObjectDescription",
        "tab\t nl\n cr\r nul\x00 bell\x07 esc\x1b del\x7f ls\u2028 ps\u2029",
        id="controls",
    ),
    pytest.param(
        "ActualEntity",
        "ObjectDescription",
        "emoji \U0001f600 family \U0001f469\u200d\U0001f469\u200d\U0001f467 flag \U0001f1ee\U0001f1e9 math \U0001d538",
        id="emoji and other astral characters",
    ),
    pytest.param("ActualEntity", "ObjectDescription", "Ωx" * 2000, id="4000 characters, unbounded field"),
    pytest.param("Users", "Name", "Ωx" * 2000, id="4000 characters, 200-character field"),
    pytest.param("OrgObject", "StartDate", dt.datetime(1, 1, 1), id="datetime(1, 1, 1)"),
    pytest.param("OrgObject", "EndDate", dt.datetime(9999, 12, 31, 23, 59, 59, 999999), id="datetime max"),
    pytest.param("ActualOrg", "Staffing", decimal.Decimal("12345678901234.5678"), id="decimal 12345678901234.5678"),
    pytest.param("ActualOrg", "Staffing", decimal.Decimal("0.0001"), id="decimal 0.0001"),
    pytest.param("ActualOrg", "Staffing", decimal.Decimal("-0.0001"), id="decimal -0.0001"),
]


def sent_value_equals(field_type: FieldType, sent: object, held: object) -> bool:
    """Whether the JSON value received means exactly the value the source holds."""
    if field_type is FieldType.DATETIME:
        return isinstance(sent, str) and dt.datetime.fromisoformat(sent) == held
    if field_type is FieldType.DECIMAL:
        return isinstance(sent, decimal.Decimal | int) and not isinstance(sent, bool) and sent == held
    return sent == held


@pytest.mark.parametrize(("entity", "field", "value"), EDGE_VALUES)
def test_an_edge_value_is_sent_exactly_as_the_source_holds_it_or_refused_naming_the_field(
    entity: str, field: str, value: object, databases: SyncDatabases, run_sync: EntitySync, settings: Settings
) -> None:
    databases.insert_rows(entity, 3)
    held = plant(databases, entity, 1, field, value)
    assert held == value or isinstance(value, decimal.Decimal), "SQLite keeps text and timestamps as given"
    api = ValidatingApiClient()
    edge_id = key_of(entity, 1)

    report = run_sync(entity, api=api)

    received = {record["Id"]: record for record in api.exact_accepted_records(settings.endpoint_url(entity))}
    assert set(received) - {edge_id} == {key_of(entity, 0), key_of(entity, 2)}, "the rest of the batch went"
    refused = [row for row in databases.rejected_rows() if row["EntityId"] == edge_id]
    assert (edge_id in received) != bool(refused), "sent or refused, never silently dropped"
    if edge_id in received:
        field_type = ENTITIES_BY_NAME[entity].field(field).type
        sent = received[edge_id][field]
        assert sent_value_equals(field_type, sent, held), (sent, held)
        assert report.rejected == 0
    else:
        assert_refused_naming(databases, edge_id, field)
        assert report.rejected == 1


def deliver(
    databases: SyncDatabases, settings: Settings, api: RecordingApiClient, entity: str, rows: list[dict[str, Any]]
) -> DeliveryCounts:
    """Hand rows, as a driver returned them, to batching and delivery: for values no SQLite column can hold."""
    spec = ENTITIES_BY_NAME[entity]
    policy = delivery_policy(settings)
    sender = BatchSender(
        entity,
        settings.endpoint_url(entity),
        api,
        TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns())),
        policy.retry,
        policy.max_split_depth,
        logging.getLogger("sync_test"),
        sleep=lambda seconds: None,
    )
    batches = untracked_batches(
        [SourcePage([[row[f.name] for f in spec.fields] for row in rows])],
        key_column="Id",
        key_index=0,
        key_type=FieldType.GUID,
        tracked_among=lambda ids: set(),
        records=RecordBuilder(spec, "Id"),
        batch_size=len(rows),
        counts=ScanCounts(),
    )
    for batch in batches:
        sender.send(batch)
    return sender.counts


@pytest.mark.parametrize(
    ("entity", "field", "value"),
    [
        pytest.param("Users", "Name", None, id="NULL in a required field"),
        pytest.param("Users", "Name", "Siti \ud800 Nurhaliza", id="lone high surrogate in text"),
        pytest.param("Users", "Name", "\udc00", id="lone low surrogate in text"),
        pytest.param("Users", "Name", 42, id="a number in a text field"),
        pytest.param("Users", "IsActive", "1", id="text in an integer field"),
        pytest.param("Users", "IsActive", True, id="a boolean in an integer field"),
        pytest.param("ActualOrg", "Staffing", decimal.Decimal("NaN"), id="NaN decimal"),
        pytest.param("ActualOrg", "Staffing", float("nan"), id="NaN float"),
        pytest.param("ActualOrg", "Staffing", decimal.Decimal("Infinity"), id="Infinity decimal"),
        pytest.param("ActualOrg", "Staffing", decimal.Decimal("0.12345678901234567891"), id="decimal needing rounding"),
        pytest.param("ActualOrg", "Staffing", "12.5", id="text in a decimal field"),
        pytest.param("EventsCalendar", "RowStatus", 2, id="2 in a boolean field"),
        pytest.param("EventsCalendar", "RowStatus", "true", id="text in a boolean field"),
        pytest.param("OrgObject", "StartDate", "2024-01-01", id="text in a datetime field"),
        pytest.param("OrgObject", "ObjectID", uuid.UUID(int=7), id="a GUID object in a text field"),
    ],
)
def test_a_value_that_cannot_be_sent_as_the_model_says_is_refused_naming_the_field(
    entity: str, field: str, value: object, databases: SyncDatabases, settings: Settings
) -> None:
    spec = ENTITIES_BY_NAME[entity]
    rows = [source_row(spec, number) for number in range(3)]
    rows[1][field] = value
    api = ValidatingApiClient()

    counts = deliver(databases, settings, api, entity, rows)

    url = settings.endpoint_url(entity)
    assert [[record["Id"] for record in call.records] for call in api.calls(url)] == [
        [key_of(entity, 0), key_of(entity, 2)]
    ], "the bad record is not sent; the rest of the batch goes in one call"
    assert (counts.sent, counts.rejected, counts.rejected_ids) == (2, 1, [key_of(entity, 1)])
    assert_refused_naming(databases, key_of(entity, 1), field)
    assert databases.tracked_ids(entity) == {key_of(entity, 0), key_of(entity, 2)}


def test_a_batch_of_only_invalid_rows_sends_nothing_and_keeps_each_refusal(
    databases: SyncDatabases, settings: Settings
) -> None:
    spec = ENTITIES_BY_NAME["Users"]
    rows = [{**source_row(spec, number), "IsActive": "no"} for number in range(3)]
    api = ValidatingApiClient()

    counts = deliver(databases, settings, api, "Users", rows)

    assert api.calls(settings.endpoint_url("Users")) == []
    assert (counts.sent, counts.rejected, counts.api_calls) == (0, 3, 0)
    assert sorted(row["EntityId"] for row in databases.rejected_rows()) == sorted(key_of("Users", n) for n in range(3))
    assert databases.scheduler_log_rows() == [], "nothing was called, so nothing is logged as a call"
