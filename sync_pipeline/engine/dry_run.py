"""A dry run: what a sync would send, counted and previewed, with no POST and no writes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from sync_pipeline.engine.batching import Batch
from sync_pipeline.engine.payload import PayloadError, RecordBuilder

PREVIEW_RECORDS = 3


@dataclass
class DryRunPreview:
    """Counts of what would be sent or refused, and the start of the first request body."""

    would_send: int = 0
    would_refuse: int = 0
    batches: int = 0
    first_payload: str | None = None
    refusals: list[str] = field(default_factory=list)


def preview(batches: Iterable[Batch], records: RecordBuilder) -> DryRunPreview:
    """Validate every batch as the real run would; keep the first payload's first records as JSON."""
    result = DryRunPreview()
    for batch in batches:
        built = []
        for entity_id, row in zip(batch.entity_ids, batch.rows, strict=True):
            try:
                built.append(records.build(row, entity_id))
            except PayloadError as exc:
                result.would_refuse += 1
                if len(result.refusals) < PREVIEW_RECORDS:
                    result.refusals.append(f"{entity_id}: {exc}")
        result.would_send += len(built)
        result.batches += bool(built)
        if result.first_payload is None and built:
            shown = json.dumps(built[:PREVIEW_RECORDS], ensure_ascii=False, indent=2)
            result.first_payload = (
                f"first batch: {len(built)} records; the first {len(built[:PREVIEW_RECORDS])}:\n{shown}"
            )
    return result
