"""A batch's records read a field at a time: the engine's per-record work as passes in C over a column."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from operator import methodcaller
from typing import Any, cast

_DICT_GET = cast(Callable[[Mapping[str, Any], str], Any], dict.get)
"""`dict.get` as called here, on a record and a name (its overloads are not one callable type)."""


def values_of(records: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    """Each record's value of `name`, None where it has none, in order.

    `dict.get` mapped over the records and the name: a third of a `methodcaller("get", name)`'s time (1.2 µs
    against 0.4 µs a record for four fields, here), which is most of a page's reading. A mapping that is not a
    dict is read by its own `get`."""
    try:
        return list(map(_DICT_GET, records, repeat(name)))
    except TypeError:  # dict.get of a mapping that is not a dict
        return list(map(methodcaller("get", name), records))
