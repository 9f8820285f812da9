"""Reading a search API that pages through only so many results, in time windows halved until each fits.

Praxedo's `searchEvents` pages at most 2,000 results and answers result code 155 when a query matches
more; its clients then narrow the date window and ask again. `WindowedPagesSource` does that as data
(`SearchWindow`): it reads the window from the start (the since-cursor's mark less the lookback) to
the moment the read began with one `HttpPagesSource`, and when an answer says "too many" it halves
the window and reads each half, the earlier first. Records a window yielded before such an answer are
read again in its halves, which the sinks' keys make harmless. A window still too full at
`min_seconds` stops the read (`SourceRefused`): more results in one second than the API pages cannot
be read by date at all.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sync_pipeline.engine.sources.http_pages import HttpPagesSource, TooManyResults
from sync_pipeline.engine.sources.sql_table import SourcePage, SourceRefused
from sync_pipeline.specs.model import SearchWindow


class WindowedPagesSource:
    """An entity's records from `start` to `end`, one paginated search per window (see the module docstring).

    `pages_of` makes the paginated source of one window from the window's query parameters."""

    def __init__(
        self,
        window: SearchWindow,
        start: dt.datetime,
        end: dt.datetime,
        pages_of: Callable[[dict[str, str]], HttpPagesSource],
        cursor_index: int | None = None,
        key_index: int = 0,
    ) -> None:
        if start.utcoffset() is None or end.utcoffset() is None:
            raise ValueError("a search window's start and end must carry a time zone")
        self._window = window
        self._start = start
        self._end = end
        self._pages_of = pages_of
        self._cursor_index = cursor_index
        self._key_index = key_index
        """Where the cursor is in a row: a stamp without an offset there is taken as UTC, as the windows are."""
        self.splits = 0
        """Windows halved because the API answered that they held too many results."""

    def pages(self) -> Iterator[SourcePage]:
        """Each window's pages, earliest window first, halving a window the API finds too full."""
        pending = [(self._start, self._end)] if self._start < self._end else []
        least = dt.timedelta(seconds=self._window.min_seconds)
        while pending:
            low, high = pending.pop(0)
            try:
                yield from self._window_pages(low, high)
            except TooManyResults as exc:
                if high - low <= least:
                    raise SourceRefused(
                        f"{exc}, even in a window of {(high - low).total_seconds():g} s from {low.isoformat()} "
                        f"(window.min_seconds {self._window.min_seconds:g}); these records cannot be read by date"
                    ) from None
                middle = low + (high - low) / 2
                pending[0:0] = [(low, middle), (middle, high)]
                self.splits += 1

    def _window_pages(self, low: dt.datetime, high: dt.datetime) -> Iterator[SourcePage]:
        """One window's records, a page at a time by keyset on the cursor: each request starts at the newest
        stamp the page before held (inclusive; the records at that stamp already read are dropped), so a
        record that moves out of the window while it is read cannot shift another past an offset. A page
        all of one stamp cannot move the keyset on: the rest of the window is then paged by offset."""
        index = self._cursor_index
        start, edge, newest = low, set[object](), None
        while True:
            source = self._pages_of(self._params(start, high))
            if index is None:
                yield from map(self._in_utc, source.pages())
                return
            first = next(source.pages(), None)  # one request: the rest of this read is never asked for
            if first is None:
                return
            page = self._in_utc(first)
            rows = [row for row in page.rows if not (row[index] == newest and row[self._key_index] in edge)]
            yield SourcePage(rows, page.unreadable, page.null_keys)
            if len(page.rows) + len(page.unreadable) + page.null_keys < source.page_size:
                return
            stamps = [row[index] for row in page.rows if isinstance(row[index], dt.datetime)]
            if not stamps or max(stamps) <= start:
                yield from (
                    self._in_utc(more) for number, more in enumerate(source.pages()) if number > 0
                )  # the page read already is its first
                return
            newest = max(stamps)
            edge = {row[self._key_index] for row in page.rows if row[index] == newest}
            start = newest

    @property
    def reads_by_key(self) -> bool:
        """Whether the search is asked for records by key (`source.key_param`)."""
        return self._pages_of({}).reads_by_key

    def by_keys(self, entity_ids: Sequence[str]) -> Iterator[SourcePage]:
        """The records of these EntityIds, searched by key without a time window (the retry queue's)."""
        return map(self._in_utc, self._pages_of({}).by_keys(entity_ids))

    def _in_utc(self, page: SourcePage) -> SourcePage:
        index = self._cursor_index
        if index is None or not any(_naive(row[index]) for row in page.rows):
            return page
        rows = [list(row) for row in page.rows]
        for row in rows:
            if _naive(row[index]):
                row[index] = row[index].replace(tzinfo=dt.UTC)
        return SourcePage(rows, page.unreadable, page.null_keys)

    def count(self) -> int | None:
        """Not known before the windows are read."""
        return None

    def ceiling(self, cursor_column: str) -> Any:
        """The end of the last window, when the read began: the mark never passes it."""
        return self._end

    def describe(self) -> str:
        """The search and its time range."""
        first = self._pages_of(self._params(self._start, self._end)).describe()
        return f"{first} in windows from {self._start.isoformat()} to {self._end.isoformat()}"

    def _params(self, low: dt.datetime, high: dt.datetime) -> dict[str, str]:
        return {self._window.from_param: low.isoformat(), self._window.to_param: high.isoformat()}


def _naive(value: Any) -> bool:
    return isinstance(value, dt.datetime) and value.utcoffset() is None
