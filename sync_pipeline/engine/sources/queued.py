"""The retry queue read again ahead of a since-cursor's read: records a run quarantined are tried every run.

A since-cursor's mark moves past a record that was refused (it is in TB_R_SYNC_REJECTED, the retry
queue, `engine/state/retry_queue.py`), so the cursor's read alone would only bring it back once it
changes. So each run of such an
entity first reads the queued records by key from its source (a table by key, an API by
`source.key_param`) and then the cursor's read without them, so that no record goes through the sink
twice in one run (its refusal would be counted twice).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sync_pipeline.engine.mapping.entity_ids import InvalidEntityId, canonical_entity_id
from sync_pipeline.engine.sources.source import KeyedSource
from sync_pipeline.engine.sources.sql_table import SourcePage
from sync_pipeline.specs.model import FieldType


def queued_first(
    source: KeyedSource, queued: Sequence[str], key_index: int, key_type: FieldType
) -> Iterator[SourcePage]:
    """The queued records' pages, then the source's own pages without them."""
    yield from source.by_keys(queued)
    chosen = set(queued)
    for page in source.pages():
        yield SourcePage(
            [row for row in page.rows if _entity_id(row[key_index], key_type) not in chosen],
            page.unreadable,
            page.null_keys,
        )


def _entity_id(value: object, key_type: FieldType) -> str | None:
    try:
        return canonical_entity_id(value, key_type)
    except InvalidEntityId:
        return None  # the batching reports it; it cannot be a queued one
