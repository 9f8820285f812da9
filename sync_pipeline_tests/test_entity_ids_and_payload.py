"""One canonical EntityId whatever the driver returns, and records that are exact JSON."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
import zoneinfo

import pytest

from sync_pipeline.engine.mapping.entity_ids import (
    InvalidEntityId,
    canonical_entity_id,
    canonical_entity_ids,
    canonical_guid,
)
from sync_pipeline.engine.mapping.payload import Record, RecordBuilder, encode_batch
from sync_pipeline.specs.model import EntitySpec, Field, FieldType
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME

from .conftest import source_row

GUID = uuid.UUID("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9")
CANONICAL = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
ACTUAL_ORG = ENTITIES_BY_NAME["ActualOrg"]


@pytest.mark.parametrize(
    "driver_value",
    [
        pytest.param("0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9", id="pyodbc upper-case string"),
        pytest.param("{0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9}", id="braces"),
        pytest.param("0a1b2c3d4e5f60718293a4b5c6d7e8f9", id="sqlite and mariadb 32 hex digits"),
        pytest.param(" 0A1B2C3D4E5F60718293A4B5C6D7E8F9 ", id="padded upper-case hex"),
        pytest.param(GUID, id="uuid.UUID"),
        pytest.param(GUID.bytes_le, id="sql server 16 bytes, little-endian groups"),
    ],
)
def test_every_driver_form_of_a_guid_becomes_the_lowercase_hyphenated_form(driver_value: object) -> None:
    assert canonical_guid(driver_value) == CANONICAL
    assert canonical_entity_id(driver_value, FieldType.GUID) == CANONICAL


def test_sixteen_bytes_are_read_in_sql_server_byte_order_not_big_endian() -> None:
    assert GUID.bytes_le != GUID.bytes
    assert canonical_guid(GUID.bytes) != CANONICAL


@pytest.mark.parametrize(
    "bad_value",
    ["not-a-guid", "", "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f", b"\x00" * 15, 12345, None],
    ids=["word", "empty", "one digit short", "fifteen bytes", "int", "null"],
)
def test_a_guid_key_that_is_not_a_guid_is_an_invalid_entity_id(bad_value: object) -> None:
    with pytest.raises(InvalidEntityId):
        canonical_entity_id(bad_value, FieldType.GUID)


@pytest.mark.parametrize(
    ("value", "key_type", "expected"),
    [(42, FieldType.INT, "42"), ("ORG-001", FieldType.TEXT, "ORG-001"), ("ABC", FieldType.TEXT, "ABC")],
)
def test_a_non_guid_key_is_tracked_as_its_text(value: object, key_type: FieldType, expected: str) -> None:
    assert canonical_entity_id(value, key_type) == expected


def test_a_null_key_of_any_type_is_an_invalid_entity_id() -> None:
    with pytest.raises(InvalidEntityId, match="NULL"):
        canonical_entity_id(None, FieldType.INT)


PRINTED = [str(uuid.UUID(int=n * 0x1F2E3D4C5B6A79881726354453627180)) for n in range(1, 6)]


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(PRINTED, id="as postgresql prints them"),
        pytest.param([value.upper() for value in PRINTED], id="as sql server prints them"),
        pytest.param([PRINTED[0].upper(), *PRINTED[1:]], id="mixed case"),
        pytest.param([uuid.UUID(value) for value in PRINTED], id="uuid.UUID"),
        pytest.param([value.replace("-", "") for value in PRINTED], id="32 hex digits"),
        pytest.param([*PRINTED[:2], "{" + PRINTED[2] + "}", *PRINTED[3:]], id="one in braces"),
        pytest.param([*PRINTED[:4], uuid.UUID(PRINTED[4]).bytes_le], id="one as bytes"),
    ],
)
def test_a_page_of_keys_gets_the_same_canonical_ids_as_one_key_at_a_time(page: list[object]) -> None:
    assert canonical_entity_ids(page, FieldType.GUID) == PRINTED
    assert canonical_entity_ids(page, FieldType.GUID) == [canonical_entity_id(v, FieldType.GUID) for v in page]


@pytest.mark.parametrize(
    ("page", "bad"),
    [
        pytest.param([*PRINTED[:2], None, *PRINTED[3:]], "NULL", id="a NULL"),
        pytest.param([*PRINTED[:2], PRINTED[2][:35] + "g"], "not a GUID", id="a non-hex digit"),
        pytest.param([PRINTED[0][:35], "0" + PRINTED[1]], "not a GUID", id="one short, the next one long"),
        pytest.param([PRINTED[0][:30] + "-" + PRINTED[0][31:]], "not a GUID", id="a fifth hyphen"),
        pytest.param([PRINTED[0].replace("-", "\n", 1)], "not a GUID", id="a newline in place of a hyphen"),
    ],
)
def test_a_page_with_one_key_that_is_not_a_guid_is_refused_naming_it(page: list[object], bad: str) -> None:
    with pytest.raises(InvalidEntityId, match=bad):
        canonical_entity_ids(page, FieldType.GUID)


def test_a_page_of_non_guid_keys_is_tracked_as_their_text() -> None:
    assert canonical_entity_ids([42, "ORG-001"], FieldType.TEXT) == ["42", "ORG-001"]
    assert canonical_entity_ids([7, 1001], FieldType.INT) == ["7", "1001"]
    assert canonical_entity_ids([], FieldType.GUID) == []


def test_a_page_of_non_guid_keys_with_a_null_is_refused_as_its_null_key_is() -> None:
    with pytest.raises(InvalidEntityId, match="NULL"):
        canonical_entity_ids([7, None, 9], FieldType.INT)


def org_row(**values: object) -> list[object]:
    """An ActualOrg source row in field order, with some fields replaced."""
    row = {**source_row(ACTUAL_ORG, 1), **values}
    return [row[field.name] for field in ACTUAL_ORG.fields]


def build_one(builder: RecordBuilder, row: list[object]) -> Record:
    """The record of a single row; fails the test with the reason if it was refused."""
    built = builder.build([row])
    assert not built.refused, built.refused
    return built.records[0]


def refusal_of(builder: RecordBuilder, row: list[object]) -> str:
    """Why a single row was refused; fails the test if it was not."""
    built = builder.build([row])
    assert built.refused, f"not refused: {built.records}"
    return built.refused[0]


@pytest.mark.parametrize(
    ("staffing", "sent_as"),
    [
        (decimal.Decimal("12.5000"), 12.5),
        (decimal.Decimal("3.0000"), 3),
        (decimal.Decimal("0.1000"), 0.1),
        (decimal.Decimal("-7.2500"), -7.25),
    ],
)
def test_a_decimal_that_is_an_exact_json_number_is_sent_as_one(staffing: decimal.Decimal, sent_as: float) -> None:
    record = build_one(RecordBuilder(ACTUAL_ORG), org_row(Staffing=staffing))

    decoded = json.loads(encode_batch([record]))[0]
    assert decoded["Staffing"] == sent_as
    assert type(decoded["Staffing"]) is type(sent_as)


@pytest.mark.parametrize(
    "staffing",
    [decimal.Decimal("12345678901234.1234"), decimal.Decimal("0.1234567890123456789"), decimal.Decimal("NaN")],
)
def test_a_decimal_that_would_be_rounded_as_a_json_number_is_refused_naming_the_field(
    staffing: decimal.Decimal,
) -> None:
    assert refusal_of(RecordBuilder(ACTUAL_ORG), org_row(Staffing=staffing)).startswith("field Staffing: ")


def test_an_infinite_decimal_is_refused_naming_the_field() -> None:
    reason = refusal_of(RecordBuilder(ACTUAL_ORG), org_row(Staffing=decimal.Decimal("Infinity")))
    assert reason == "field Staffing: Infinity is not a finite number"


def test_a_record_keeps_nulls_and_converts_each_type_for_json() -> None:
    events = ENTITIES_BY_NAME["EventsCalendar"]
    row = {
        **source_row(events, 4),
        "Id": GUID.bytes_le,
        "ModifiedBy": None,
        "ModifiedOn": None,
        "RowStatus": False,
        "StartDate": dt.datetime(2024, 2, 29, 23, 59, 59, 500_000),
    }

    record = build_one(RecordBuilder(events), [row[field.name] for field in events.fields])

    decoded = json.loads(encode_batch([record]))[0]
    assert decoded["Id"] == CANONICAL
    assert decoded["ModifiedBy"] is None and decoded["ModifiedOn"] is None
    assert decoded["RowStatus"] is False
    assert decoded["StartDate"] == "2024-02-29T23:59:59.500000"


STAMPED = EntitySpec("Stamped", "stamped", None, (Field("Id", FieldType.INT), Field("At", FieldType.DATETIME)))

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
ODD_OFFSET = dt.timezone(dt.timedelta(hours=1, seconds=1, microseconds=5))


@pytest.mark.parametrize(
    "column",
    [
        [dt.datetime(2026, 1, 1), dt.datetime(2024, 2, 29, 23, 59, 59, 500), dt.datetime(1, 1, 1, 0, 0, 0, 1)],
        [dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(999, 12, 31, 23, 59, 59, 250_000, tzinfo=dt.UTC)],
        [dt.datetime(2026, 1, 1, 12, 30), dt.datetime(2026, 1, 1, 12, 30, 0, 7, tzinfo=dt.UTC)],
        [dt.datetime(2026, 3, 29, 2, 30, fold=1, tzinfo=PARIS), dt.datetime(2026, 7, 1, 8, tzinfo=PARIS)],
        [dt.datetime(2026, 1, 1, 9, 15, 0, 120, tzinfo=ODD_OFFSET), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)],
        [dt.date(2026, 1, 1), dt.date(1, 1, 1)],
    ],
    ids=["naive", "utc", "naive-and-utc", "named-zone", "offset-with-seconds", "dates"],
)
def test_a_column_of_timestamps_is_sent_as_each_ones_isoformat(column: list[dt.date]) -> None:
    """The column is written at once (orjson) where that gives the same text, and never a different text:
    orjson would cut an offset's seconds."""
    built = RecordBuilder(STAMPED).build([[n, value] for n, value in enumerate(column)])

    assert [record["At"] for record in built.records] == [value.isoformat() for value in column]


def test_a_batch_is_encoded_as_a_compact_utf8_json_array() -> None:
    body = encode_batch([{"Name": "Siti Nurhaliza — Jakarta"}, {"Name": "B"}])

    assert body == '[{"Name":"Siti Nurhaliza — Jakarta"},{"Name":"B"}]'.encode()


def test_a_batch_keeps_its_good_rows_in_order_and_names_the_first_bad_field_of_each_other_row() -> None:
    users = ENTITIES_BY_NAME["Users"]
    rows = [
        [GUID, "R1", "u1", "Ana", "F", "ana@example.com", 1],
        [GUID, "R2", "u2", None, "M", None, 0],
        [GUID, "R3", "u3", 42, "M", "b@example.com", True],
        [GUID, "R4", "u4", "Dewi", "F", None, 1],
    ]
    ids = ["id-1", "id-2", "id-3", "id-4"]

    built = RecordBuilder(users, key_column="Id").build(rows, ids)

    assert built.positions == [0, 3]
    assert built.refused == {1: "field Name: is required but NULL", 2: "field Name: expected text, got int"}
    assert built.records == [
        {
            "Id": "id-1",
            "NoReg": "R1",
            "Username": "u1",
            "Name": "Ana",
            "Gender": "F",
            "Email": "ana@example.com",
            "IsActive": 1,
        },
        {"Id": "id-4", "NoReg": "R4", "Username": "u4", "Name": "Dewi", "Gender": "F", "Email": None, "IsActive": 1},
    ]


def test_a_row_with_a_value_missing_is_an_error_not_a_shorter_record() -> None:
    users = ENTITIES_BY_NAME["Users"]

    with pytest.raises(ValueError, match="6 values, the model 7 fields"):
        RecordBuilder(users).build([[GUID, "R1", "u1", "Ana", "F", None]])
