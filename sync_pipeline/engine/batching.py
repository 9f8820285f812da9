"""Untracked source rows, gathered into batches of exactly the configured size (the last may be short)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from sync_pipeline.engine.entity_ids import canonical_entity_ids
from sync_pipeline.entities import FieldType


@dataclass(frozen=True)
class Batch:
    """Records to send in one call, with their canonical EntityIds in the same order."""

    entity_ids: list[str]
    rows: list[Sequence[Any]]


@dataclass
class ScanCounts:
    """How many source rows were read and how many of them were already tracked."""

    rows_found: int = 0
    already_tracked: int = 0


def untracked_batches(
    pages: Iterable[Sequence[Sequence[Any]]],
    key_index: int,
    key_type: FieldType,
    tracked_among: Callable[[Sequence[str]], set[str]],
    batch_size: int,
    counts: ScanCounts,
) -> Iterator[Batch]:
    """Drop each page's already-tracked rows and yield the rest in batches of `batch_size`."""
    entity_ids: list[str] = []
    rows: list[Sequence[Any]] = []
    key_of = itemgetter(key_index)
    for page in pages:
        page_ids = canonical_entity_ids(list(map(key_of, page)), key_type)
        tracked = tracked_among(page_ids)
        counts.rows_found += len(page)
        counts.already_tracked += len(tracked)
        for entity_id, row in zip(page_ids, page, strict=True):
            if entity_id in tracked:
                continue
            entity_ids.append(entity_id)
            rows.append(row)
            if len(rows) == batch_size:
                yield Batch(entity_ids, rows)
                entity_ids, rows = [], []
    if rows:
        yield Batch(entity_ids, rows)
