"""Field maps: a source's built records to the destination's, as declared, checked once when built."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
import yaml

from sync_pipeline.engine.mapping.field_map import FieldMap, FieldMapError, FieldRule, MappingError, field_map_from
from sync_pipeline.engine.mapping.payload import Record, RecordBuilder
from sync_pipeline.specs.mapping import FieldMapSettings
from sync_pipeline.specs.model import EntitySpec, Field, FieldType

WORK_ORDERS = EntitySpec(
    name="WorkOrder",
    asset_name="work_orders",
    source_db="default_db",
    fields=(
        Field("Id", FieldType.GUID),
        Field("Title", FieldType.TEXT),
        Field("Code", FieldType.TEXT),
        Field("State", FieldType.TEXT),
        Field("Priority", FieldType.INT, nullable=True),
        Field("Hours", FieldType.DECIMAL),
        Field("Urgent", FieldType.BOOL),
        Field("PlannedOn", FieldType.DATETIME),
        Field("Street", FieldType.TEXT),
        Field("City", FieldType.TEXT),
        Field("SiteId", FieldType.TEXT, nullable=True),
    ),
)
"""A CHR-like source: what the coming CHR -> Praxedo syncs read."""

ORDER_ID = uuid.UUID("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9")


def work_order(**changes: object) -> Record:
    """One work order as `RecordBuilder` makes it from a source row, with `changes` to its column values."""
    row: dict[str, object] = {
        "Id": ORDER_ID,
        "Title": "Replace the pump",
        "Code": "42",
        "State": "O",
        "Priority": 2,
        "Hours": decimal.Decimal("1.50"),
        "Urgent": True,
        "PlannedOn": dt.datetime(2024, 1, 31, 8, 30),
        "Street": "1 Main St",
        "City": "Lyon",
        "SiteId": "0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9",
    } | changes
    built = RecordBuilder(WORK_ORDERS).build([[row[field.name] for field in WORK_ORDERS.fields]])
    assert not built.refused, built.refused
    return built.records[0]


def mapped(rules: dict[str, FieldRule], record: Record | None = None) -> Record:
    """`record` (a default work order) through a field map of `rules` over the work orders."""
    return FieldMap(rules, WORK_ORDERS.fields).map_record(record if record is not None else work_order())


def declaration_error(rules: dict[str, FieldRule]) -> str:
    """The message of the error building a field map of `rules` raises."""
    with pytest.raises(FieldMapError) as raised:
        FieldMap(rules, WORK_ORDERS.fields)
    return str(raised.value)


def test_a_renamed_field_carries_its_source_value_under_the_destination_name() -> None:
    record = mapped({"id": FieldRule(source="Id"), "label": FieldRule(source="Title")})

    assert record == {"id": str(ORDER_ID), "label": "Replace the pump"}


def test_a_field_without_from_takes_the_source_field_of_its_own_name_as_it_is() -> None:
    assert mapped({"Title": FieldRule(), "Hours": FieldRule()}) == {"Title": "Replace the pump", "Hours": 1.5}


@pytest.mark.parametrize(
    ("source", "to", "value", "expected"),
    [
        pytest.param("Code", FieldType.INT, "42", 42, id="text to int"),
        pytest.param("Code", FieldType.INT, "-7", -7, id="signed text to int"),
        pytest.param("Priority", FieldType.TEXT, 2, "2", id="int to text"),
        pytest.param("Hours", FieldType.TEXT, decimal.Decimal("1.25"), "1.25", id="decimal to text"),
        pytest.param("Code", FieldType.DECIMAL, "12.50", 12.5, id="text to decimal"),
        pytest.param("Priority", FieldType.DECIMAL, 2, 2, id="int as decimal"),
        pytest.param("Hours", FieldType.INT, decimal.Decimal("3.00"), 3, id="whole decimal to int"),
        pytest.param("Code", FieldType.BOOL, "TRUE", True, id="text true to bool"),
        pytest.param("Code", FieldType.BOOL, "0", False, id="text 0 to bool"),
        pytest.param("Priority", FieldType.BOOL, 1, True, id="int 1 to bool"),
        pytest.param("Code", FieldType.DATETIME, "2024-01-31 08:30:00", "2024-01-31T08:30:00", id="text to datetime"),
        pytest.param("Code", FieldType.DATETIME, "2024-01-31", "2024-01-31", id="text date stays a date"),
        pytest.param(
            "Code", FieldType.GUID, "{0A1B2C3D-4E5F-6071-8293-A4B5C6D7E8F9}", str(ORDER_ID), id="text to guid"
        ),
        pytest.param("Priority", FieldType.TEXT, None, None, id="a NULL stays null"),
    ],
)
def test_type_converts_a_value_to_the_destinations_type(
    source: str, to: FieldType, value: object, expected: object
) -> None:
    record = mapped({"out": FieldRule(source=source, type=to)}, work_order(**{source: value}))

    assert record == {"out": expected}
    assert type(record["out"]) is type(expected)


@pytest.mark.parametrize(
    ("source", "to", "value", "reason"),
    [
        pytest.param("Code", FieldType.INT, "4 2", "not an integer", id="text that is not an integer"),
        pytest.param("Hours", FieldType.INT, decimal.Decimal("1.5"), "not an integer", id="decimal with a fraction"),
        pytest.param(
            "Code", FieldType.DECIMAL, "0.1000000000000000055", "without rounding", id="decimal text JSON would round"
        ),
        pytest.param("Code", FieldType.DECIMAL, "NaN", "not a finite number", id="NaN"),
        pytest.param("Urgent", FieldType.TEXT, True, "map it with value_map", id="bool has no one text form"),
        pytest.param("Code", FieldType.BOOL, "yes", "not a boolean", id="text that is not a boolean"),
        pytest.param("Priority", FieldType.BOOL, 2, "not a boolean", id="int other than 0 or 1"),
        pytest.param("Code", FieldType.DATETIME, "31/01/2024", "Invalid isoformat", id="not ISO 8601"),
        pytest.param("Code", FieldType.GUID, "12345", "not a GUID", id="text that is not a GUID"),
    ],
)
def test_a_value_with_no_exact_form_of_the_type_is_an_error_naming_the_field_and_the_value(
    source: str, to: FieldType, value: object, reason: str
) -> None:
    field_map = FieldMap({"out": FieldRule(source=source, type=to)}, WORK_ORDERS.fields)
    record = work_order(**{source: value})

    with pytest.raises(MappingError) as raised:
        field_map.map_record(record)

    assert (raised.value.destination, raised.value.source, raised.value.value) == ("out", source, record[source])
    assert str(raised.value).startswith(f"field out (from {source}): cannot convert {record[source]!r}: ")
    assert reason in str(raised.value)


def test_a_constant_is_the_same_in_every_record_and_may_be_null() -> None:
    field_map = FieldMap(
        {"id": FieldRule(source="Id"), "origin": FieldRule(constant="CHR"), "note": FieldRule(constant=None)},
        WORK_ORDERS.fields,
    )

    batch = field_map.map_batch([work_order(), work_order(Id=uuid.UUID(int=1))])

    assert [(record["origin"], record["note"]) for record in batch.records] == [("CHR", None), ("CHR", None)]
    assert [record["id"] for record in batch.records] == [str(ORDER_ID), str(uuid.UUID(int=1))]


def test_a_value_map_translates_each_source_value() -> None:
    field_map = FieldMap(
        {"status": FieldRule(source="State", value_map={"O": "open", "C": "closed"})}, WORK_ORDERS.fields
    )

    batch = field_map.map_batch([work_order(State="O"), work_order(State="C")])

    assert batch.records == [{"status": "open"}, {"status": "closed"}]


def test_a_value_map_without_default_refuses_an_unmapped_value_naming_the_field_and_the_value() -> None:
    field_map = FieldMap({"status": FieldRule(source="State", value_map={"O": "open"})}, WORK_ORDERS.fields)

    with pytest.raises(MappingError) as raised:
        field_map.map_record(work_order(State="X"))

    assert str(raised.value) == "field status (from State): value 'X' is not in value_map and there is no default"
    assert raised.value.value == "X"


def test_a_value_map_with_default_gives_the_default_for_an_unmapped_value_even_null() -> None:
    rules = {
        "status": FieldRule(source="State", value_map={"O": "open"}, default="other"),
        "priority": FieldRule(source="Priority", value_map={1: "high"}, default=None),
    }

    assert mapped(rules, work_order(State="X", Priority=3)) == {"status": "other", "priority": None}


def test_a_value_maps_values_are_converted_to_the_type_once_when_the_map_is_built() -> None:
    rules = {"urgency": FieldRule(source="Urgent", type=FieldType.INT, value_map={True: "1", False: "0"})}

    assert mapped(rules, work_order(Urgent=True)) == {"urgency": 1}
    assert mapped(rules, work_order(Urgent=False)) == {"urgency": 0}


def test_a_guid_value_map_key_matches_the_canonical_form_whatever_its_spelling() -> None:
    rules = {"site": FieldRule(source="Id", value_map={str(ORDER_ID).upper(): "head office"})}

    assert mapped(rules) == {"site": "head office"}


def test_when_null_gives_its_value_wherever_the_other_field_is_null_and_never_refuses_those_records() -> None:
    # A completed work order without a completion date is a cancellation, as Praxedo's clients read it.
    field_map = FieldMap(
        {"status": FieldRule(source="State", value_map={"O": "open"}, when_null=("Priority", "cancelled"))},
        WORK_ORDERS.fields,
    )

    batch = field_map.map_batch(
        [work_order(State="O"), work_order(State="X", Priority=None), work_order(State="X", Priority=1)]
    )

    assert batch.records == [{"status": "open"}, {"status": "cancelled"}]
    assert batch.positions == [0, 1]
    assert str(batch.refused[2]) == "field status (from State): value 'X' is not in value_map and there is no default"


def test_when_null_yaml_is_read_into_the_rule_and_its_field_is_checked_against_the_source() -> None:
    declared = FieldMapSettings.model_validate(
        yaml.safe_load("status: {from: State, when_null: {field: Priority, value: cancelled}}")
    )
    assert field_map_from(declared, WORK_ORDERS.fields).map_record(work_order(Priority=None)) == {"status": "cancelled"}

    unknown = FieldMapSettings.model_validate({"status": {"from": "State", "when_null": {"field": "Nope", "value": 1}}})
    with pytest.raises(FieldMapError, match=r"field status: when_null: no source field 'Nope'"):
        field_map_from(unknown, WORK_ORDERS.fields)
    never_null = FieldMapSettings.model_validate(
        {"status": {"from": "State", "when_null": {"field": "City", "value": 1}}}
    )
    with pytest.raises(FieldMapError, match="source field City is not nullable"):
        field_map_from(never_null, WORK_ORDERS.fields)


def test_dotted_destination_names_build_nested_objects() -> None:
    rules = {
        "id": FieldRule(source="Id"),
        "address.street": FieldRule(source="Street"),
        "address.city": FieldRule(source="City"),
        "address.geo.country": FieldRule(constant="FR"),
    }

    record = mapped(rules)

    assert record == {"id": str(ORDER_ID), "address": {"street": "1 Main St", "city": "Lyon", "geo": {"country": "FR"}}}


def test_one_record_that_cannot_be_mapped_is_refused_alone_and_the_others_are_mapped() -> None:
    field_map = FieldMap(
        {
            "id": FieldRule(source="Id"),
            "code": FieldRule(source="Code", type=FieldType.INT),
            "status": FieldRule(source="State", value_map={"O": "open", "C": "closed"}),
        },
        WORK_ORDERS.fields,
    )
    records = [work_order(Id=uuid.UUID(int=n), State="C" if n == 3 else "O") for n in range(5)]
    records[1] = work_order(Id=uuid.UUID(int=1), Code="n/a")
    records[3] = work_order(Id=uuid.UUID(int=3), Code="x", State="?")

    batch = field_map.map_batch(records)

    assert batch.positions == [0, 2, 4]
    assert [record["id"] for record in batch.records] == [str(uuid.UUID(int=n)) for n in (0, 2, 4)]
    assert {position: str(error) for position, error in batch.refused.items()} == {
        1: "field code (from Code): cannot convert 'n/a': not an integer",
        3: "field code (from Code): cannot convert 'x': not an integer",  # its first field in declaration order
    }


def test_a_record_without_the_source_field_is_refused_naming_the_field() -> None:
    field_map = FieldMap({"label": FieldRule(source="Title")}, WORK_ORDERS.fields)
    incomplete = work_order()
    del incomplete["Title"]

    batch = field_map.map_batch([work_order(), incomplete])

    assert batch.positions == [0]
    assert str(batch.refused[1]) == "field label (from Title): missing from the record"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        pytest.param({}, "a field map needs at least one destination field", id="empty"),
        pytest.param(
            {"label": FieldRule(source="Name")},
            "field label: no source field 'Name'; the source has Id, Title, Code,",
            id="unknown source field",
        ),
        pytest.param(
            {"label": FieldRule()},
            "field label: no source field 'label' (name one with from:); the source has Id,",
            id="no from and no source field of that name",
        ),
        pytest.param(
            {"origin": FieldRule(source="Title", constant="CHR")},
            "field origin: a constant is sent as written; it takes no from",
            id="constant and from",
        ),
        pytest.param(
            {"origin": FieldRule(constant=["CHR"])},
            "field origin: constant ['CHR'] is not one JSON value",
            id="constant that is a list",
        ),
        pytest.param(
            {"status": FieldRule(source="State", default="other")},
            "field status (from State): default is the value for what value_map lacks, but there is no value_map",
            id="default without value_map",
        ),
        pytest.param(
            {"status": FieldRule(source="State", value_map={})},
            "field status (from State): value_map is empty",
            id="empty value_map",
        ),
        pytest.param(
            {"priority": FieldRule(source="Priority", value_map={"1": "high"})},
            "field priority (from Priority): value_map key '1' is a str, but Priority holds int values (int)",
            id="text key for an int source",
        ),
        pytest.param(
            {"priority": FieldRule(source="Priority", value_map={True: "high"})},
            "field priority (from Priority): value_map key True is a bool, but Priority holds int values (int)",
            id="bool key for an int source",
        ),
        pytest.param(
            {"status": FieldRule(source="State", value_map={None: "none"})},
            "field status (from State): value_map key None is a NoneType, but State holds text values (str)",
            id="null key for a field that is never null",
        ),
        pytest.param(
            {"site": FieldRule(source="Id", value_map={"head office": "x"})},
            "field site (from Id): value_map key 'head office' is not a GUID",
            id="guid key that is not a guid",
        ),
        pytest.param(
            {"rank": FieldRule(source="State", type=FieldType.INT, value_map={"O": "first"})},
            "field rank (from State): value_map value 'first' cannot be converted: not an integer",
            id="value_map value not of the type",
        ),
        pytest.param(
            {"address": FieldRule(source="City"), "address.street": FieldRule(source="Street")},
            "field address.street: address is a value, so it cannot also hold fields",
            id="a value and an object",
        ),
        pytest.param(
            {"address.street": FieldRule(source="Street"), "address": FieldRule(source="City")},
            "field address: address is an object of other fields, so it cannot be a value",
            id="an object and then a value",
        ),
        pytest.param(
            {"address..street": FieldRule(source="Street")},
            "field 'address..street': a dotted name needs a name between every two dots",
            id="empty part of a dotted name",
        ),
    ],
)
def test_a_declaration_that_cannot_work_is_refused_when_built_naming_the_destination_field(
    rules: dict[str, FieldRule], message: str
) -> None:
    assert declaration_error(rules).startswith(message)


def test_the_yaml_shape_declares_the_same_map_and_tells_a_null_constant_from_none() -> None:
    document = yaml.safe_load(
        """
        id: {from: Id}
        status: {from: State, value_map: {O: open, C: closed}, default: null}
        hours: {from: Hours, type: text}
        address.city: {from: City}
        note: {constant: null}
        """
    )

    field_map = field_map_from(FieldMapSettings.model_validate(document), WORK_ORDERS.fields)

    assert field_map.map_record(work_order(State="?")) == {
        "id": str(ORDER_ID),
        "status": None,
        "hours": "1.5",
        "address": {"city": "Lyon"},
        "note": None,
    }


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        pytest.param({"form": "Id"}, "Extra inputs are not permitted", id="misspelt key"),
        pytest.param({"from": "Id", "type": "integer"}, "Input should be 'guid', 'text'", id="unknown type"),
        pytest.param({"constant": {"a": 1}}, "constant", id="constant that is an object"),
    ],
)
def test_the_yaml_shape_refuses_a_rule_of_the_wrong_shape(rule: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        FieldMapSettings.model_validate({"out": rule})
