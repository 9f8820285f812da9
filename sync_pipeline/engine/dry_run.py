"""A dry run: what a sync would send, counted and previewed, with no POST and no writes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from sync_pipeline.engine.batching import Batch

PREVIEW_RECORDS = 3


@dataclass
class DryRunPreview:
    """Counts of what would be sent or refused, and the start of the first request body."""

    would_send: int = 0
    would_refuse: int = 0
    batches: int = 0
    first_payload: str | None = None
    refusals: list[str] = field(default_factory=list)


def preview(batches: Iterable[Batch]) -> DryRunPreview:
    """Count the batches as the real run would send them; keep the first payload's first records as JSON."""
    result = DryRunPreview()
    for batch in batches:
        result.would_refuse += batch.refused_rows
        room = PREVIEW_RECORDS - len(result.refusals)
        result.refusals.extend(rejection.describe() for rejection in batch.refused[: max(room, 0)])
        sendable = batch.records
        result.would_send += len(sendable)
        result.batches += bool(sendable)
        if result.first_payload is None and sendable:
            shown = json.dumps(sendable[:PREVIEW_RECORDS], ensure_ascii=False, indent=2)
            result.first_payload = (
                f"first batch: {len(sendable)} records; the first {len(sendable[:PREVIEW_RECORDS])}:\n{shown}"
            )
    return result
