"""A local CHR API on 127.0.0.1 (CHR_Omnia360's REST interface as this product reads it), for the tests of the
field-service syncs reading CHR through its API instead of its database.

`GET /api/v1/<collection>` lists accounts, contacts or work orders a page at a time (`page` from 1,
`page_size` at most 100, answered `{"data": [...], "total": n}` in id order), from `modifiedSince`
(ISO-8601, on `ModifiedOn`) if given, or only the ids in `ids` (comma-separated). `PATCH
/api/v1/workorders/<id>` sets a work order's `Status` and `CompletedOn` as CHR does: only forward in
CHR's order of statuses (a later status stays, answered 200 with the record as it is), 404 for an
unknown id, 422 for a status CHR does not know. Every call needs the API key in `X-API-Key` (401
otherwise). Records have the columns of CHR's tables (`field_service_seed.chr_rows`), datetimes as ISO text.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from sync_pipeline.demo.receiver import BackgroundServer, send_json

API_PATH = "/api/v1/"
COLLECTIONS = {"accounts": "AccountId", "contacts": "ContactId", "workorders": "WorkOrderId"}
"""Each collection and its key."""
MAX_PAGE_SIZE = 100
STATUS_ORDER = ("Open", "Dispatched", "Completed", "Validated", "Cancelled", "Closed")
"""CHR's work-order statuses in the order they move; an earlier one never replaces a later one."""


class ChrSimulator(BackgroundServer):
    """CHR's API in a background thread; `base_url` ends with `/api/v1/`."""

    def __init__(self, api_key: str, rows: Mapping[str, Sequence[Mapping[str, Any]]], port: int = 0) -> None:
        self._api_key = api_key
        self._lock = threading.Lock()
        self._held: dict[str, dict[str, dict[str, Any]]] = {
            collection: {str(row[key]): _as_json(row) for row in rows.get(collection, ())}
            for collection, key in COLLECTIONS.items()
        }
        self.patches: list[tuple[str, dict[str, Any]]] = []
        """Every PATCH answered (not refused for its key), in order: the work order's id and the body."""
        self.unauthorized = 0
        super().__init__(_handler_for(self), port, name="chr")

    @property
    def base_url(self) -> str:
        """Where the settings' `apis.chr.base_url` should point."""
        return self.address(API_PATH)

    def held(self, collection: str) -> dict[str, dict[str, Any]]:
        """The collection's records by id (copies)."""
        with self._lock:
            return {key: dict(record) for key, record in self._held[collection].items()}

    def put(self, collection: str, record: Mapping[str, Any]) -> None:
        """Add or replace a record, as a CHR user would."""
        with self._lock:
            self._held[collection][str(record[COLLECTIONS[collection]])] = _as_json(record)

    def answer(self, method: str, path: str, api_key: str, body: bytes) -> tuple[int, Any]:
        """The status and JSON answer of one call."""
        if api_key != self._api_key:
            with self._lock:
                self.unauthorized += 1
            return HTTPStatus.UNAUTHORIZED, {"error": "a valid X-API-Key is required"}
        parts = urllib.parse.urlsplit(path)
        segments = parts.path.removeprefix(API_PATH).strip("/").split("/")
        if segments[0] not in COLLECTIONS or len(segments) > 2:
            return HTTPStatus.NOT_FOUND, {"error": f"no {parts.path}"}
        query = dict(urllib.parse.parse_qsl(parts.query))
        with self._lock:
            if method == "GET" and len(segments) == 1:
                return self._page(segments[0], query)
            if method == "PATCH" and segments[0] == "workorders" and len(segments) == 2:
                return self._patch(urllib.parse.unquote(segments[1]), body)
        return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} {parts.path} is not allowed"}

    def _page(self, collection: str, query: dict[str, str]) -> tuple[int, Any]:
        try:
            page, size = int(query.get("page", "1")), int(query.get("page_size", "50"))
        except ValueError:
            return HTTPStatus.BAD_REQUEST, {"error": "page and page_size are whole numbers"}
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            return HTTPStatus.BAD_REQUEST, {"error": f"page from 1, page_size 1 to {MAX_PAGE_SIZE}"}
        records = [self._held[collection][key] for key in sorted(self._held[collection])]
        if "ids" in query:
            wanted = set(query["ids"].split(","))
            records = [record for record in records if str(record[COLLECTIONS[collection]]) in wanted]
        if "modifiedSince" in query:
            since = dt.datetime.fromisoformat(query["modifiedSince"])
            records = [r for r in records if r.get("ModifiedOn") and _moment(r["ModifiedOn"]) >= _moment(since)]
        chosen = records[(page - 1) * size : page * size]
        return HTTPStatus.OK, {"data": [dict(record) for record in chosen], "total": len(records)}

    def _patch(self, work_order: str, body: bytes) -> tuple[int, Any]:
        held = self._held["workorders"].get(work_order)
        if held is None:
            return HTTPStatus.NOT_FOUND, {"error": f"no work order {work_order}"}
        try:
            change = json.loads(body)
        except ValueError:
            return HTTPStatus.BAD_REQUEST, {"error": "the body is not JSON"}
        status = change.get("Status")
        if status not in STATUS_ORDER:
            return HTTPStatus.UNPROCESSABLE_ENTITY, {"error": f"Status {status!r} is not one of {STATUS_ORDER}"}
        self.patches.append((work_order, change))
        current = held.get("Status")
        if current not in STATUS_ORDER or STATUS_ORDER.index(current) < STATUS_ORDER.index(status):
            held.update(Status=status, CompletedOn=change.get("CompletedOn"))
        return HTTPStatus.OK, dict(held)


def _as_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """A CHR row as its API answers it: datetimes as ISO text."""
    return {name: value.isoformat() if isinstance(value, dt.datetime) else value for name, value in record.items()}


def _moment(value: str | dt.datetime) -> dt.datetime:
    """A timestamp as an aware UTC instant (CHR's naive ones are UTC)."""
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=dt.UTC)


def _handler_for(simulator: ChrSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, payload = simulator.answer(self.command, self.path, self.headers.get("X-API-Key", ""), body)
            send_json(self, status, payload)

        do_GET = do_PATCH = _answer

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read the simulator's state instead."""

    return Handler
