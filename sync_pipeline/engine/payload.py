"""Source rows to the JSON the API expects: field names as in the models, values JSON-ready.

Each field type has one converter, chosen once per entity, so the per-row work is a dict build.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable, Sequence
from typing import Any

from sync_pipeline.engine.entity_ids import canonical_guid
from sync_pipeline.entities import EntitySpec, FieldType

Record = dict[str, Any]
Converter = Callable[[Any], Any]


class PayloadError(ValueError):
    """A value cannot be represented in JSON exactly; names the field and the value."""


def _datetime(value: dt.datetime | dt.date) -> str:
    return value.isoformat()


def _decimal(value: decimal.Decimal | float | int) -> float | int:
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise PayloadError(f"decimal {value} is not a finite number")
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        if decimal.Decimal(repr(as_float)) != value.normalize():
            raise PayloadError(f"decimal {value} cannot be sent as a JSON number without rounding")
        return as_float
    return value


_CONVERTERS: dict[FieldType, Converter] = {
    FieldType.GUID: canonical_guid,
    FieldType.TEXT: str,
    FieldType.INT: int,
    FieldType.DECIMAL: _decimal,
    FieldType.DATETIME: _datetime,
    FieldType.BOOL: bool,
}


class RecordBuilder:
    """Turns a source row (values in `spec.fields` order) into the model's JSON object."""

    def __init__(self, spec: EntitySpec) -> None:
        self._fields = [(field.name, _CONVERTERS[field.type]) for field in spec.fields]

    def build(self, row: Sequence[Any]) -> Record:
        """The JSON-ready record; raises `PayloadError` naming the field that cannot be sent."""
        record: Record = {}
        for (name, convert), value in zip(self._fields, row, strict=True):
            try:
                record[name] = None if value is None else convert(value)
            except (TypeError, ValueError) as exc:
                raise PayloadError(f"field {name}: {exc}") from None
        return record


def encode_batch(records: Sequence[Record]) -> bytes:
    """The request body: a compact UTF-8 JSON array of the records."""
    return json.dumps(records, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
