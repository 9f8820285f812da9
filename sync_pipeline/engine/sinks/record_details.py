"""More of each row an upsert writes, read by its own GET (a Zuora workflow's export) and kept in a column.

The rows are filled in place, several GETs at a time (`parallel`), each through the source's retry
loop and audited like its pages; they share the customer's one transport, so its rate limit holds for
all of them. A GET that still fails (a 404, a 5xx after the retries, a body that is not JSON) does not
stop anything: its row is written with the detail column empty, the status column `failed` and the
reason, and the upsert fetches it again on the next run (`RecordDetails`).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.sources.http_pages import NotFound
from sync_pipeline.engine.sources.sql_table import SourceUnavailable
from sync_pipeline.specs.model import RecordDetails

DETAIL_OK = "ok"
DETAIL_FAILED = "failed"
_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")


class DetailFetcher:
    """Fills `details.columns` of rows from `GET <endpoint>/<details.path>`, `parallel` calls at a time."""

    def __init__(
        self,
        details: RecordDetails,
        table: sa.Table,
        endpoint_url: str,
        get_json: Callable[[str], object],
        parallel: int,
    ) -> None:
        missing = [name for name in (*details.columns, *_PLACEHOLDER.findall(details.path)) if name not in table.c]
        if missing:
            raise ValueError(
                f"details: {', '.join(missing)} not in {table.name} (its columns: {', '.join(table.c.keys())})"
            )
        self.details = details
        self._base = endpoint_url.rstrip("/") + "/"
        self._get_json = get_json
        self._parallel = max(1, parallel)
        self._as_json = isinstance(table.c[details.column].type, sa.JSON)
        self._error_length = getattr(table.c[details.error_column].type, "length", None)

    def url_of(self, row: Mapping[str, Any]) -> str:
        """The detail's URL for a row: the path's placeholders filled with its values, each quoted."""
        path = _PLACEHOLDER.sub(lambda found: urllib.parse.quote(str(row[found.group(1)]), safe=""), self.details.path)
        return self._base + path

    def fill(self, rows: Sequence[dict[str, Any]]) -> int:
        """Fetch each row's detail into it; how many failed (their status `failed`, with the reason)."""
        if not rows:
            return 0
        with ThreadPoolExecutor(min(self._parallel, len(rows)), thread_name_prefix="details") as calls:
            outcomes = list(calls.map(self._fetch, rows))
        failed = 0
        for row, (body, error) in zip(rows, outcomes, strict=True):
            column, status, reason = self.details.columns
            row[column] = body
            row[status] = DETAIL_OK if error is None else DETAIL_FAILED
            row[reason] = error
            failed += error is not None
        return failed

    def gone(self, rows: Sequence[Mapping[str, Any]]) -> list[bool]:
        """For each row, whether its detail answers 404 (the record is gone at the source): a row a listing
        left out is marked deleted only then, since a listing that shifted while it was read leaves out
        records that are still there. Any other failure counts as not gone."""
        if not rows:
            return []
        with ThreadPoolExecutor(min(self._parallel, len(rows)), thread_name_prefix="details") as calls:
            return list(calls.map(self._is_gone, rows))

    def _is_gone(self, row: Mapping[str, Any]) -> bool:
        try:
            self._get_json(self.url_of(row))
        except NotFound:
            return True
        except SourceUnavailable:
            return False
        return False

    def _fetch(self, row: Mapping[str, Any]) -> tuple[Any, str | None]:
        try:
            body = self._get_json(self.url_of(row))
        except SourceUnavailable as exc:  # SourceRefused too: a 404 or a body that is not JSON
            return None, str(exc)[: self._error_length]
        return (body if self._as_json else json.dumps(body, separators=(",", ":"), sort_keys=True)), None
