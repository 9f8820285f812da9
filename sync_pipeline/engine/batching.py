"""Source pages into batches of exactly the configured number of sendable records (the last may be short).

Everything that keeps a row from going out is decided here, before rows are gathered, so a refused
row never shrinks a batch: a NULL key, a key that has no EntityId, a row the driver could not read,
a second copy of an ID, a value that breaks the model. Each becomes a `Rejection` with its reason,
carried by the next batch to be recorded; the other rows go on.

Rows come in key order, so copies of one ID are neighbours: a page is checked against itself and
against the previous page's last ID, and no set of every ID sent is ever kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sync_pipeline.engine.mapping.entity_ids import InvalidEntityId, canonical_entity_id, canonical_entity_ids
from sync_pipeline.engine.mapping.payload import Record, RecordBuilder
from sync_pipeline.engine.sources.sql_table import SourcePage
from sync_pipeline.engine.state.tracking import Rejection
from sync_pipeline.specs.model import FieldType

NULL_KEY_ENTITY_ID = "(NULL key)"
"""The EntityId under which rows with a NULL key are reported: they have no ID of their own."""
MAX_ENTITY_ID_LENGTH = 255


@dataclass(frozen=True)
class Batch:
    """Records to send in one call with their EntityIds in the same order, and the rows refused before it."""

    entity_ids: list[str]
    records: list[Record]
    refused: list[Rejection] = field(default_factory=list)
    refused_rows: int = 0
    """Source rows the refusals stand for (one NULL-key refusal stands for all such rows)."""


@dataclass
class ScanCounts:
    """How many source rows were read and how many of them were already tracked."""

    rows_found: int = 0
    already_tracked: int = 0


@dataclass(frozen=True)
class UntrackedPage:
    """A page's rows that this run sends (unique, valid keys, not yet sent) and what was refused on it."""

    entity_ids: list[str]
    rows: Sequence[Sequence[Any]]
    refused: list[Rejection]
    refused_rows: int


def untracked_pages(
    pages: Iterable[SourcePage],
    key_column: str,
    key_index: int,
    key_type: FieldType,
    tracked_among: Callable[[Sequence[str]], set[str]],
    counts: ScanCounts,
) -> Iterator[UntrackedPage]:
    """Each page's rows to send, after refusing bad keys, unreadable rows and copies of an ID, and
    dropping what `tracked_among` says was already sent."""
    key_of = itemgetter(key_index)
    previous_last_id: str | None = None
    for page in pages:
        refused: list[Rejection] = []
        refused_rows = 0
        if page.null_keys:
            refused.append(
                Rejection(
                    NULL_KEY_ENTITY_ID,
                    None,
                    f"not sent: key column {key_column} is NULL in {page.null_keys} source row(s); "
                    "such rows cannot be tracked",
                )
            )
            refused_rows += page.null_keys
        for unreadable in page.unreadable:
            refused.append(Rejection(_reported_id(unreadable.key, key_type), None, f"not read: {unreadable.reason}"))
            refused_rows += 1
        rows = page.rows
        try:
            page_ids = canonical_entity_ids(list(map(key_of, rows)), key_type)
        except InvalidEntityId:
            page_ids, rows, bad_keys = _valid_keys(rows, key_of, key_column, key_type)
            refused.extend(bad_keys)
            refused_rows += len(bad_keys)
        if page_ids and (page_ids[0] == previous_last_id or len(set(page_ids)) != len(page_ids)):
            page_ids, rows, copies = _first_copies(page_ids, rows, previous_last_id, key_column)
            refused.extend(copies)
            refused_rows += len(copies)
        if page_ids:
            previous_last_id = page_ids[-1]
        tracked = tracked_among(page_ids) if page_ids else set()
        counts.rows_found += len(page.rows) + len(page.unreadable) + page.null_keys
        counts.already_tracked += len(tracked)
        if tracked:
            kept = [index for index, entity_id in enumerate(page_ids) if entity_id not in tracked]
            page_ids = [page_ids[index] for index in kept]
            rows = [rows[index] for index in kept]
        yield UntrackedPage(page_ids, rows, refused, refused_rows)


def full_batches(pages: Iterable[UntrackedPage], records: RecordBuilder, batch_size: int) -> Iterator[Batch]:
    """Build each page's records and yield them `batch_size` at a time, refusals riding on the next batch.

    Refusals never wait for more than a batch's worth to pile up, so a table of bad rows keeps memory flat.
    """
    entity_ids: list[str] = []
    built_records: list[Record] = []
    refused: list[Rejection] = []
    refused_rows = 0
    for page in pages:
        refused.extend(page.refused)
        refused_rows += page.refused_rows
        built = records.build(page.rows, page.entity_ids)
        if built.refused:
            ids = page.entity_ids
            refused.extend(Rejection(ids[i], None, f"not sent: {reason}") for i, reason in built.refused.items())
            refused_rows += len(built.refused)
            entity_ids.extend(ids[index] for index in built.positions)
        else:
            entity_ids.extend(page.entity_ids)
        built_records.extend(built.records)
        while len(built_records) >= batch_size:
            yield Batch(entity_ids[:batch_size], built_records[:batch_size], refused, refused_rows)
            entity_ids, built_records = entity_ids[batch_size:], built_records[batch_size:]
            refused, refused_rows = [], 0
        if len(refused) >= batch_size:
            yield Batch([], [], refused, refused_rows)
            refused, refused_rows = [], 0
    if built_records or refused:
        yield Batch(entity_ids, built_records, refused, refused_rows)


def _reported_id(key: object, key_type: FieldType) -> str:
    """The key's EntityId if it has one, else its text as read: what the rejected table shows."""
    try:
        return canonical_entity_id(key, key_type)
    except InvalidEntityId:
        return str(key)[:MAX_ENTITY_ID_LENGTH]


def _valid_keys(
    rows: Sequence[Sequence[Any]], key_of: Callable[[Sequence[Any]], Any], key_column: str, key_type: FieldType
) -> tuple[list[str], list[Sequence[Any]], list[Rejection]]:
    """A page's rows whose key has an EntityId, with their IDs, and a refusal for each other row."""
    entity_ids: list[str] = []
    kept: list[Sequence[Any]] = []
    refused: list[Rejection] = []
    for row in rows:
        key = key_of(row)
        try:
            entity_ids.append(canonical_entity_id(key, key_type))
        except InvalidEntityId as exc:
            reason = f"not sent: key column {key_column}: {exc}"
            refused.append(Rejection(str(key)[:MAX_ENTITY_ID_LENGTH], None, reason))
            continue
        kept.append(row)
    return entity_ids, kept, refused


def _first_copies(
    entity_ids: Sequence[str], rows: Sequence[Sequence[Any]], previous_last_id: str | None, key_column: str
) -> tuple[list[str], list[Sequence[Any]], list[Rejection]]:
    """The first row of each ID (an ID sent on the previous page counts as seen) and a refusal per copy."""
    seen = {previous_last_id}
    kept_ids: list[str] = []
    kept: list[Sequence[Any]] = []
    refused: list[Rejection] = []
    for entity_id, row in zip(entity_ids, rows, strict=True):
        if entity_id in seen:
            reason = f"not sent: duplicate: {key_column} {entity_id} is on more than one source row; the first went"
            refused.append(Rejection(entity_id, None, reason))
            continue
        seen.add(entity_id)
        kept_ids.append(entity_id)
        kept.append(row)
    return kept_ids, kept, refused


def untracked_batches(
    pages: Iterable[SourcePage],
    key_column: str,
    key_index: int,
    key_type: FieldType,
    tracked_among: Callable[[Sequence[str]], set[str]],
    records: RecordBuilder,
    batch_size: int,
    counts: ScanCounts,
) -> Iterator[Batch]:
    """The source's untracked, valid rows as built batches of exactly `batch_size` records."""
    untracked = untracked_pages(pages, key_column, key_index, key_type, tracked_among, counts)
    return full_batches(untracked, records, batch_size)
