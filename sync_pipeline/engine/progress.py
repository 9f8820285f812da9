"""A long entity's progress in the run's log: at most one line per interval, while it runs.

Each line says how many records were sent, rejected and failed so far, of how many candidates
when the source could count them, the rate and the time left at that rate. Lines come when a batch
settles, so a run of small, fast batches logs no more than one of few large ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sync_pipeline.engine.sinks.http_batch import DeliveryCounts
from sync_pipeline.engine.sources.sql_table import SourceUnavailable
from sync_pipeline.engine.state.selection import Selection
from sync_pipeline.engine.state.tracking import TrackingUnavailable


def count_candidates(
    entity: str,
    count: Callable[[], int | None],
    tracked: Callable[[], int] | None,
    selection: Selection,
    log: logging.Logger,
) -> int | None:
    """How many records the selection will settle (send, reject or fail); None when unknown.

    The untracked selection of a never-sent entity is the source's `count` minus the entity's `tracked`
    count (low when tracked rows were since deleted from the source); any other entity's (`tracked` None), and a resend
    of all, is the source's count; a resend of given IDs their number, one of records tracked before a
    time unknown. A count that fails is logged and the sync goes on without a total.
    """
    if selection.resend == "ids":
        return len(selection.ids)
    if selection.resend == "tracked_before":
        return None
    try:
        rows = count()
        if rows is None or selection.resend == "all" or tracked is None:
            return rows
        return max(rows - tracked(), 0)
    except (SourceUnavailable, TrackingUnavailable) as exc:
        log.warning(f"{entity}: progress without a total or time left: {exc}")
        return None


class ProgressReporter:
    """Logs one entity's progress when a batch settles and `interval_seconds` have passed since the last line.

    Batches in flight settle on several threads: one of them logs, the others go on. 0 logs nothing.
    """

    def __init__(
        self,
        entity: str,
        interval_seconds: float,
        log: logging.Logger,
        candidates: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._candidates = candidates
        self._entity = entity
        self._interval = interval_seconds
        self._log = log
        self._clock = clock
        self._started = clock()
        self._due = self._started + interval_seconds
        self._deciding = threading.Lock()  # one line per interval, whichever thread gets there first

    def batch_settled(self, counts: DeliveryCounts) -> None:
        """Log a line if one is due; `counts` are the entity's figures so far, shared by its senders."""
        if not self._interval:
            return
        now = self._clock()
        with self._deciding:
            if now < self._due:
                return
            self._due = now + self._interval
        # Read while other batches may settle: each figure is one it had at some moment of this call.
        self._log.info(self._line(counts.sent, counts.rejected, counts.failed, now - self._started))

    def _line(self, sent: int, rejected: int, failed: int, elapsed: float) -> str:
        """`Users: progress 6000 of 30000 (20%): sent …, rejected …, failed …; 600.0 records/s, about 40s left`."""
        done = sent + rejected + failed
        rate = done / elapsed if elapsed > 0 else 0.0
        figures = f"sent {sent}, rejected {rejected}, failed {failed}; {rate:.1f} records/s"
        if self._candidates is None:
            return f"{self._entity}: progress {done}: {figures}"
        percent = f" ({done * 100 // self._candidates}%)" if self._candidates else ""
        left = f", about {_duration(max(self._candidates - done, 0) / rate)} left" if rate > 0 else ""
        return f"{self._entity}: progress {done} of {self._candidates}{percent}: {figures}{left}"


def _duration(seconds: float) -> str:
    """`45s`, `3m05s`, `2h07m`: as precise as a time left at the current rate can be."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
