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
        """For a page of EntityIds, those this run must not send."""
        if self.resend == "all":
            return lambda ids: set()
        if self.resend == "ids":
            return lambda ids: {entity_id for entity_id in ids if entity_id not in self.ids}
        if self.resend == "tracked_before":
            assert self.tracked_before is not None
            before = self.tracked_before
            tracked_before = _snapshot_on_first_page(lambda: tracking.tracked_ids(entity, tracked_before=before))
            return lambda ids: set(ids) - tracked_before(ids)
        return _snapshot_on_first_page(lambda: tracking.tracked_ids(entity))


def _snapshot_on_first_page(snapshot: Callable[[], TrackedIds]) -> Callable[[Sequence[str]], set[str]]:
    """Look pages up in a snapshot of the tracked IDs taken when the first page comes.

    The first page is read under the entity's lock, so no other run can track anything of this
    entity afterwards, and what this run delivers is never read again: the snapshot stays exact.
    A first sync (or a full resync of an emptied table) reads an empty one and looks nothing up.
    """
    taken: list[TrackedIds] = []

    def tracked_among(ids: Sequence[str]) -> set[str]:
        if not taken:
            taken.append(snapshot())
        return taken[0].among(ids)

    return tracked_among


SEND_UNTRACKED = Selection()
"""The nightly run's selection: every record not tracked yet."""
