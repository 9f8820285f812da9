"""Which of an entity's source records a run sends: the untracked ones, or an operator's resend.

A resend (all records, given IDs, or records tracked before a time) ignores tracking when choosing
and refreshes the tracking rows of what it delivers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sync_pipeline.engine.state.tracked_ids import TrackedIds
from sync_pipeline.engine.state.tracking import TrackingStore

Resend = Literal["none", "all", "ids", "tracked_before"]


@dataclass(frozen=True)
class Selection:
    """The run's choice of records; the default sends what is not tracked yet."""

    resend: Resend = "none"
    ids: frozenset[str] = field(default_factory=frozenset)
    tracked_before: dt.datetime | None = None

    @property
    def refreshes_tracking(self) -> bool:
        """A resend delivers tracked records again, so their tracking rows are replaced."""
        return self.resend != "none"

    def already_sent(self, entity: str, tracking: TrackingStore) -> Callable[[Sequence[str]], set[str]]:
        """For a page of EntityIds, those this run must not send; for the untracked selection a
        `TrackedSnapshot`, which also says how many records are tracked."""
        if self.resend == "all":
            return lambda ids: set()
        if self.resend == "ids":
            return lambda ids: {entity_id for entity_id in ids if entity_id not in self.ids}
        if self.resend == "tracked_before":
            assert self.tracked_before is not None
            before = self.tracked_before
            tracked_before = TrackedSnapshot(lambda: tracking.tracked_ids(entity, tracked_before=before))
            return lambda ids: set(ids) - tracked_before(ids)
        return TrackedSnapshot(lambda: tracking.tracked_ids(entity))


class TrackedSnapshot:
    """Pages looked up in a snapshot of the tracked IDs, taken when first needed: the first page, or the
    count of the tracked records when the run counts its candidates first.

    Both come under the entity's lock, so no other run can track anything of this entity afterwards,
    and what this run delivers is never read again: the snapshot stays exact, and its size plus the
    rows this run tracks is the entity's tracked count, with no COUNT over the tracking table (at a
    million rows on PostgreSQL, 0.25-0.45 s just after they were written). A first sync (or a full
    resync of an emptied table) reads an empty one and looks nothing up.
    """

    def __init__(self, read: Callable[[], TrackedIds]) -> None:
        self._read = read
        self._taken: TrackedIds | None = None

    def __call__(self, entity_ids: Sequence[str]) -> set[str]:
        return self._snapshot().among(entity_ids)

    def __len__(self) -> int:
        """How many records were tracked when the snapshot was taken (taking it now if it was not)."""
        return len(self._snapshot())

    @property
    def taken(self) -> bool:
        """Whether the snapshot was read (a run that read no page may not have taken it)."""
        return self._taken is not None

    def _snapshot(self) -> TrackedIds:
        if self._taken is None:
            self._taken = self._read()
        return self._taken


SEND_UNTRACKED = Selection()
"""The nightly run's selection: every record not tracked yet."""
