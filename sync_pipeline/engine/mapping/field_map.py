"""Mapping as data: a built record (the source's typed JSON values) to the destination's record.

A declaration gives each destination field one rule: its value is a source field's (`source`, a
rename; by default the field of the destination's own name), optionally looked up in a `value_map`
and converted by `type`, or a `constant`; `when_null` replaces it by a fixed value in every record
where another source field is null (a completed work order without a completion date is a
cancellation). A dotted destination name (`address.street`) is a field of
a nested object. The declaration is checked once, against the source's fields, when the `FieldMap`
is built; applying it works column by column, as `RecordBuilder` does, so a batch costs a few list
passes, and a record that cannot be mapped is refused alone, with the field and the value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Final, NamedTuple

from sync_pipeline.engine.mapping.entity_ids import canonical_guid
from sync_pipeline.engine.mapping.payload import Record, exact_json_number
from sync_pipeline.specs.mapping import FieldMapSettings
from sync_pipeline.specs.model import Field, FieldType

Converter = Callable[[Any], Any]
_JSON_SCALARS = (str, int, float, bool, type(None))
"""What a constant, a value_map's value or its default may be: one JSON value, not an object or a list."""


class _NoValue:
    """The type of `NO_VALUE`: `constant` and `default` may be null, so absence needs its own value."""

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Final = _NoValue()
"""A `constant` or `default` that was not given (None is a valid value: JSON null)."""


class FieldMapError(ValueError):
    """The declaration itself is wrong; the message names the destination field and what is wrong."""


class MappingError(ValueError):
    """One record cannot be mapped: names the destination field, the source field and the value."""

    def __init__(self, destination: str, source: str, value: object, reason: str) -> None:
        super().__init__(f"field {destination} (from {source}): {reason}")
        self.destination = destination
        self.source = source
        self.value = value


@dataclass(frozen=True)
class FieldRule:
    """Where one destination field's value comes from (see the module docstring)."""

    source: str | None = None
    type: FieldType | None = None
    constant: object = NO_VALUE
    value_map: Mapping[Any, Any] | None = None
    default: object = NO_VALUE
    when_null: tuple[str, object] | None = None
    """(source field, value): the value given wherever that field is null, whatever the rule gives."""


class MappedBatch(NamedTuple):
    """A batch mapped: the destination records, where each came from, and why the others cannot go."""

    records: list[Record]
    positions: list[int]
    refused: dict[int, MappingError]
    """Record position (ascending) -> the error of its first destination field, in declaration order."""


def _shown(value: object) -> str:
    """A value as an error message shows it: its repr, cut at 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_BOOLEAN_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _to_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError("a boolean has no one text form; map it with value_map")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise TypeError(f"expected text or a number, got {type(value).__name__}")


def _to_int(value: object) -> int:
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError("not an integer")


def _to_decimal(value: object) -> int | float:
    if isinstance(value, str):
        return exact_json_number(decimal.Decimal(value))  # decimal.InvalidOperation is an ArithmeticError
    return exact_json_number(value)


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _BOOLEAN_TEXT:
        return _BOOLEAN_TEXT[value.lower()]
    raise ValueError("not a boolean (true, false, 1 or 0)")


def _to_datetime(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO 8601 timestamp, got {type(value).__name__}")
    if len(value) == len("2024-01-31"):
        return dt.date.fromisoformat(value).isoformat()
    return dt.datetime.fromisoformat(value).isoformat()


_CONVERTERS: dict[FieldType, Converter] = {
    FieldType.TEXT: _to_text,
    FieldType.INT: _to_int,
    FieldType.DECIMAL: _to_decimal,
    FieldType.BOOL: _to_bool,
    FieldType.DATETIME: _to_datetime,
    FieldType.GUID: canonical_guid,
}
"""The destination's type from any JSON value that has exactly one form of it; anything else raises."""

_PASSED_AS_IS: dict[FieldType, frozenset[type]] = {
    FieldType.TEXT: frozenset({str, type(None)}),
    FieldType.INT: frozenset({int, type(None)}),
    FieldType.DECIMAL: frozenset({int, float, type(None)}),
    FieldType.BOOL: frozenset({bool, type(None)}),
    FieldType.DATETIME: frozenset({type(None)}),
    FieldType.GUID: frozenset({type(None)}),
}
"""Value types already of the destination's type (by exact type: `bool` is not an `int`); a NULL stays null."""

_KEY_TYPES: dict[FieldType, tuple[type, ...]] = {
    FieldType.TEXT: (str,),
    FieldType.GUID: (str,),
    FieldType.DATETIME: (str,),
    FieldType.INT: (int,),
    FieldType.DECIMAL: (int, float),
    FieldType.BOOL: (bool,),
}
"""The types a value_map key may have: those of the source field's built values."""

_CONVERSION_ERRORS = (TypeError, ValueError, ArithmeticError)


_INT_AS_DECIMAL = (FieldType.INT, FieldType.DECIMAL)


def _needs_conversion(source: FieldType, destination: FieldType) -> bool:
    """Whether built values of a `source` field are not already of the `destination` type."""
    return destination is not source and (source, destination) != _INT_AS_DECIMAL


class _Marker:
    """The type of the markers below: values no record or declaration can hold."""


_UNMAPPED: Final = _Marker()
"""What a value_map without a default gives for a value it lacks."""
_ABSENT: Final = _Marker()
"""What a record lacking the source field gives for it."""


class _Unmappable(Exception):
    """A value that cannot be mapped; the message says why."""


class _FromSource:
    """A destination field whose value comes from a source field."""

    destination: str
    source: str

    def values(self, records: Sequence[Record]) -> tuple[list[Any], bool]:
        """The source field's value in each record, `_ABSENT` where a record lacks it, and whether none does."""
        try:
            return list(map(itemgetter(self.source), records)), True
        except KeyError:
            return [record.get(self.source, _ABSENT) for record in records], False

    def one_by_one(self, values: list[Any], convert: Converter, refused: dict[int, MappingError]) -> list[Any]:
        """`convert` applied to each value; a value it refuses refuses its record, with the reason."""
        converted = list(values)
        for index, value in enumerate(values):
            try:
                if value is _ABSENT:
                    raise _Unmappable("missing from the record")
                converted[index] = convert(value)
            except _Unmappable as exc:
                shown = None if value is _ABSENT else value
                refused.setdefault(index, MappingError(self.destination, self.source, shown, str(exc)))
            except _CONVERSION_ERRORS as exc:
                reason = f"cannot convert {_shown(value)}: {exc}"
                refused.setdefault(index, MappingError(self.destination, self.source, value, reason))
        return converted


@dataclass(frozen=True)
class _Copied(_FromSource):
    """A source field's value as it is (already of the destination's type, or no type asked for)."""

    destination: str
    source: str

    def column(self, records: Sequence[Record], refused: dict[int, MappingError]) -> list[Any]:
        """This field's value in each record; a record without the field is refused."""
        values, complete = self.values(records)
        return values if complete else self.one_by_one(values, _unchanged, refused)


@dataclass(frozen=True)
class _Converted(_FromSource):
    """A source field's value converted to the destination's type; a NULL stays null."""

    destination: str
    source: str
    convert: Converter
    as_is: frozenset[type]

    def column(self, records: Sequence[Record], refused: dict[int, MappingError]) -> list[Any]:
        """This field's value in each record; one that cannot be converted refuses its record."""
        values, complete = self.values(records)
        types = set(map(type, values))
        if complete and types <= self.as_is:
            return values
        if complete:
            try:
                return list(map(self._converted if type(None) in types else self.convert, values))
            except _CONVERSION_ERRORS:
                pass  # some value cannot be converted: found out one by one, so only its record is refused
        return self.one_by_one(values, self._converted, refused)

    def _converted(self, value: object) -> object:
        return None if value is None else self.convert(value)


@dataclass(frozen=True)
class _LookedUp(_FromSource):
    """A source field's value looked up in a value_map (whose values are already of the destination's type)."""

    destination: str
    source: str
    lookup: dict[Any, Any]
    fallback: object  # the default, or _UNMAPPED

    def column(self, records: Sequence[Record], refused: dict[int, MappingError]) -> list[Any]:
        """This field's value in each record; a value the map lacks, without a default, refuses its record."""
        values, complete = self.values(records)
        try:
            mapped = list(map(self.lookup.get, values, repeat(self.fallback)))
        except TypeError:  # an unhashable value: found out one by one
            mapped = [_UNMAPPED]
        if not complete or (self.fallback is _UNMAPPED and _UNMAPPED in mapped):
            return self.one_by_one(values, self._looked_up, refused)
        return mapped

    def _looked_up(self, value: object) -> object:
        try:
            found = self.lookup.get(value, self.fallback)
        except TypeError:
            found = self.fallback
        if found is _UNMAPPED:
            raise _Unmappable(f"value {_shown(value)} is not in value_map and there is no default")
        return found


@dataclass(frozen=True)
class _Constant:
    """The same value in every record."""

    destination: str
    value: object

    def column(self, records: Sequence[Record], refused: dict[int, MappingError]) -> list[Any]:
        """The constant, once per record."""
        return [self.value] * len(records)


@dataclass(frozen=True)
class _WhenNull:
    """Another rule's value, replaced by `value` in each record whose source field `field` is null; such a
    record is never refused for the rule it replaces."""

    destination: str
    rule: _Copied | _Converted | _LookedUp | _Constant
    field: str
    value: object

    def column(self, records: Sequence[Record], refused: dict[int, MappingError]) -> list[Any]:
        """The rule's values, with `value` where `field` is null."""
        own: dict[int, MappingError] = {}
        values = self.rule.column(records, own)
        for index, record in enumerate(records):
            if record.get(self.field) is None:
                values[index] = self.value
                own.pop(index, None)
        for index, error in own.items():
            refused.setdefault(index, error)
        return values


def _unchanged(value: object) -> object:
    return value


_Leaf = _Copied | _Converted | _LookedUp | _Constant | _WhenNull
_Node = dict[str, "_Leaf | _Node"]


class FieldMap:
    """A checked mapping from a source's built records to the destination's records."""

    def __init__(self, rules: Mapping[str, FieldRule], source_fields: Sequence[Field]) -> None:
        """Check `rules` (destination field -> rule) against `source_fields`; raises `FieldMapError`."""
        if not rules:
            raise FieldMapError("a field map needs at least one destination field")
        sources = {field.name: field for field in source_fields}
        self.destinations = tuple(rules)
        """The destination fields, as declared (dotted for nested ones)."""
        self._tree: _Node = {}
        for destination, rule in rules.items():
            _place(self._tree, destination, _compile(destination, rule, sources))

    def map_record(self, record: Record) -> Record:
        """The destination record of one built record; raises `MappingError` if it cannot be mapped."""
        batch = self.map_batch([record])
        if batch.refused:
            raise batch.refused[0]
        return batch.records[0]

    def map_batch(self, records: Sequence[Record]) -> MappedBatch:
        """The destination records of a batch; each record that cannot be mapped is refused alone."""
        refused: dict[int, MappingError] = {}
        mapped = _objects(self._tree, records, refused)
        if not refused:
            return MappedBatch(mapped, list(range(len(mapped))), refused)
        positions = [index for index in range(len(mapped)) if index not in refused]
        return MappedBatch([mapped[index] for index in positions], positions, dict(sorted(refused.items())))


def _objects(node: _Node, records: Sequence[Record], refused: dict[int, MappingError]) -> list[Record]:
    """The (nested) objects `node` describes, one per record, built a column at a time."""
    columns = [
        _objects(child, records, refused) if isinstance(child, dict) else child.column(records, refused)
        for child in node.values()
    ]
    return list(map(dict, map(zip, repeat(list(node)), zip(*columns, strict=True))))


def _place(tree: _Node, destination: str, leaf: _Leaf) -> None:
    """Put `leaf` at its dotted path in `tree`; a path that is both a value and an object is an error."""
    *parents, name = destination.split(".")
    if not all([*parents, name]):
        raise FieldMapError(f"field {destination!r}: a dotted name needs a name between every two dots")
    node = tree
    for depth, parent in enumerate(parents):
        child = node.setdefault(parent, {})
        if not isinstance(child, dict):
            prefix = ".".join(parents[: depth + 1])
            raise FieldMapError(f"field {destination}: {prefix} is a value, so it cannot also hold fields")
        node = child
    if name in node:  # only an object can be there already: a mapping's keys are unique
        raise FieldMapError(f"field {destination}: {destination} is an object of other fields, so it cannot be a value")
    node[name] = leaf


def _compile(destination: str, rule: FieldRule, sources: Mapping[str, Field]) -> _Leaf:
    """Check one rule against the source's fields and compile it; raises `FieldMapError` naming `destination`."""
    leaf = _compile_value(destination, rule, sources)
    if rule.when_null is None:
        return leaf
    name, value = rule.when_null
    where = f"field {destination}: when_null"
    if name not in sources:
        raise FieldMapError(f"{where}: no source field {name!r}; the source has {', '.join(sources)}")
    if not sources[name].nullable:
        raise FieldMapError(f"{where}: source field {name} is not nullable, so the value would never be used")
    convert = _CONVERTERS[rule.type] if rule.type is not None else None
    return _WhenNull(destination, leaf, name, _output(where, convert, value, "value"))


def _compile_value(
    destination: str, rule: FieldRule, sources: Mapping[str, Field]
) -> _Copied | _Converted | _LookedUp | _Constant:
    """The rule's value before `when_null`: a constant, or a source field's value, looked up or converted."""
    where = f"field {destination}"
    if rule.constant is not NO_VALUE:
        given = [
            name
            for name, value in (("from", rule.source), ("type", rule.type), ("value_map", rule.value_map))
            if value is not None
        ] + (["default"] if rule.default is not NO_VALUE else [])
        if given:
            raise FieldMapError(f"{where}: a constant is sent as written; it takes no {', '.join(given)}")
        _check_json_scalar(where, "constant", rule.constant)
        return _Constant(destination, rule.constant)
    source_name = rule.source if rule.source is not None else destination.rsplit(".", 1)[-1]
    source = sources.get(source_name)
    if source is None:
        hint = "" if rule.source is not None else " (name one with from:)"
        raise FieldMapError(f"{where}: no source field {source_name!r}{hint}; the source has {', '.join(sources)}")
    where = f"{where} (from {source_name})"
    if rule.value_map is None:
        if rule.default is not NO_VALUE:
            raise FieldMapError(f"{where}: default is the value for what value_map lacks, but there is no value_map")
        if rule.type is None or not _needs_conversion(source.type, rule.type):
            return _Copied(destination, source_name)
        return _Converted(destination, source_name, _CONVERTERS[rule.type], _PASSED_AS_IS[rule.type])
    if not rule.value_map:
        raise FieldMapError(f"{where}: value_map is empty")
    convert = _CONVERTERS[rule.type] if rule.type is not None else None
    lookup = {_key(where, source, key): _output(where, convert, value) for key, value in rule.value_map.items()}
    fallback = _UNMAPPED if rule.default is NO_VALUE else _output(where, convert, rule.default, "default")
    return _LookedUp(destination, source_name, lookup, fallback)


def _key(where: str, source: Field, key: object) -> object:
    """A value_map key as the source's built values hold it; one typed unlike them could never match."""
    if key is None and source.nullable:
        return None
    expected = _KEY_TYPES[source.type]
    if isinstance(key, bool) is not (bool in expected) or not isinstance(key, expected):
        raise FieldMapError(
            f"{where}: value_map key {_shown(key)} is a {type(key).__name__}, but {source.name} holds "
            f"{source.type.value} values ({' or '.join(t.__name__ for t in expected)})"
        )
    if source.type is FieldType.GUID:
        try:
            return canonical_guid(key)
        except ValueError:
            raise FieldMapError(f"{where}: value_map key {_shown(key)} is not a GUID") from None
    return key


def _output(where: str, convert: Converter | None, value: object, role: str = "value_map value") -> object:
    """A value_map value or default, checked and already converted to the destination's type."""
    _check_json_scalar(where, role, value)
    if convert is None or value is None:
        return value
    try:
        return convert(value)
    except _CONVERSION_ERRORS as exc:
        raise FieldMapError(f"{where}: {role} {_shown(value)} cannot be converted: {exc}") from None


def _check_json_scalar(where: str, role: str, value: object) -> None:
    if not isinstance(value, _JSON_SCALARS) or (isinstance(value, float) and not math.isfinite(value)):
        raise FieldMapError(f"{where}: {role} {_shown(value)} is not one JSON value (text, number, boolean or null)")


def field_map_from(declared: FieldMapSettings, source_fields: Sequence[Field]) -> FieldMap:
    """The checked `FieldMap` a YAML mapping declares over `source_fields`; raises `FieldMapError` naming
    the destination field. A `constant` or `default` written as null is kept apart from one not written."""
    rules = {}
    for name, rule in declared.root.items():
        given = rule.model_fields_set
        rules[name] = FieldRule(
            source=rule.from_,
            type=rule.type,
            constant=rule.constant if "constant" in given else NO_VALUE,
            value_map=rule.value_map,
            default=rule.default if "default" in given else NO_VALUE,
            when_null=(rule.when_null.field, rule.when_null.value) if rule.when_null else None,
        )
    return FieldMap(rules, source_fields)
