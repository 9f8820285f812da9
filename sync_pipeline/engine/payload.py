"""Source rows to the JSON the API expects, checked against the model before anything is sent.

Each field type has one converter, chosen once per entity, so the per-row work is a dict build.
A value is either sent exactly as the source holds it or refused with a reason naming the field:
never rounded, truncated or silently dropped.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from sync_pipeline.engine.entity_ids import canonical_guid
from sync_pipeline.entities import EntitySpec, Field, FieldType

Record = dict[str, Any]
Converter = Callable[[Any], Any]


class PayloadError(ValueError):
    """A value cannot be sent exactly as the model requires; names the field and the value."""


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # BIT/TINYINT(1) as some drivers return it
        return bool(value)
    raise TypeError(f"expected a boolean, got {value!r}")


def _datetime(value: object) -> str:
    if not isinstance(value, dt.datetime | dt.date):
        raise TypeError(f"expected a timestamp, got {type(value).__name__}")
    return value.isoformat()


def _decimal(value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, decimal.Decimal | int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if isinstance(value, int):
        return value
    number = decimal.Decimal(value)
    if not number.is_finite():
        raise ValueError(f"{value} is not a finite number")
    if number == number.to_integral_value():
        return int(number)
    as_float = float(number)
    if decimal.Decimal(repr(as_float)) != number.normalize():
        raise ValueError(f"decimal {value} cannot be sent as a JSON number without rounding")
    return as_float


_CONVERTERS: dict[FieldType, Converter] = {
    FieldType.GUID: canonical_guid,
    FieldType.TEXT: _text,
    FieldType.INT: _int,
    FieldType.DECIMAL: _decimal,
    FieldType.DATETIME: _datetime,
    FieldType.BOOL: _bool,
}


def _same(value: Any) -> Any:
    return value


class RecordBuilder:
    """Turns a source row (values in `spec.fields` order) into the model's JSON object."""

    def __init__(self, spec: EntitySpec, key_column: str | None = None) -> None:
        self._fields: list[tuple[Field, Converter]] = [(field, _CONVERTERS[field.type]) for field in spec.fields]
        names = [field.name for field in spec.fields]
        self._key_position = names.index(key_column) if key_column else None
        self._fields_with_known_key = [
            (field, _same if position == self._key_position else convert)
            for position, (field, convert) in enumerate(self._fields)
        ]

    def build(self, row: Sequence[Any], entity_id: str | None = None) -> Record:
        """The JSON-ready record; raises `PayloadError` naming the field that cannot be sent.

        Given the row's canonical `entity_id` (batching already made it), the key is not converted twice.
        """
        fields = self._fields
        if entity_id is not None and self._key_position is not None:
            row = [*row]
            row[self._key_position] = entity_id
            fields = self._fields_with_known_key
        record: Record = {}
        for (field, convert), value in zip(fields, row, strict=True):
            if value is None:
                if not field.nullable:
                    raise PayloadError(f"field {field.name}: is required but NULL")
                record[field.name] = None
                continue
            try:
                record[field.name] = convert(value)
            except (TypeError, ValueError, ArithmeticError) as exc:
                raise PayloadError(f"field {field.name}: {exc}") from None
        return record


def encode_batch(records: Sequence[Record] | Sequence[Any]) -> bytes:
    """The request body: a compact UTF-8 JSON array; raises `PayloadError` if it cannot be encoded.

    orjson writes NaN as null, so non-finite numbers are refused earlier, by the converters.
    """
    try:
        return orjson.dumps(records)
    except (TypeError, ValueError) as exc:  # a lone surrogate in text, an integer beyond 64 bits
        raise PayloadError(f"not encodable as UTF-8 JSON: {exc}") from None


def explain_unencodable(record: Record) -> str:
    """Why one record cannot be encoded, naming the field (for the rejected-records table)."""
    for name, value in record.items():
        try:
            encode_batch([value])
        except PayloadError as exc:
            return f"field {name}: {str(exc).removeprefix('not encodable as UTF-8 JSON: ')}"
    return "not encodable as UTF-8 JSON"
