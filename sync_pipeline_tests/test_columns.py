"""A field of a batch's records read at once: as each record's `get` would read it, whatever mapping it is."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

from sync_pipeline.engine.columns import values_of


def test_each_records_value_is_read_in_order_with_none_where_it_has_none() -> None:
    records: list[Mapping[str, Any]] = [{"id": 1, "name": "a"}, {"id": 2}, {"id": 3, "name": None}]

    assert values_of(records, "name") == ["a", None, None]
    assert values_of(records, "id") == [1, 2, 3]
    assert values_of([], "id") == []


def test_a_mapping_that_is_not_a_dict_is_read_by_its_own_get() -> None:
    records: list[Mapping[str, Any]] = [{"id": 1}, types.MappingProxyType({"id": 2}), {"other": 3}]

    assert values_of(records, "id") == [1, 2, None]
