"""A local receiving API on 127.0.0.1: the third-party system, for the demo and the tests.

It accepts JSON arrays POSTed under `/api/sync/<endpoint>`, checks the API key header, keeps
every record's Id per endpoint (so duplicates are visible), serves REST collections of single
records under `/api/records/<collection>` (POST creates under an id it chooses, PUT or PATCH
`/<id>` updates, GET lists them a page at a time by page, offset or cursor, with an `updated_since`
filter) and can be told to misbehave on chosen calls the way real APIs do: an error status (with
`Retry-After`, any body and content type, or one echoing the request's headers), a hang, a reset
connection, or a body or headers that trickle out.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import itertools
import json
import socket
import struct
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self

PATH_PREFIX = "/api/sync/"
RECORDS_PREFIX = "/api/records/"
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
SIZE_PARAMS = ("page_size", "limit")
POSITION_PARAMS = ("page", "offset", "cursor")
SINCE_PARAM = "updated_since"
SINCE_FIELD = "updated_at"


@dataclass(frozen=True)
class Fault:
    """How to misbehave on one call: answer `status` (with headers and body), hang, reset, or trickle.

    `echo_headers` puts the request's headers (the API key among them) in the body, as some APIs
    and debugging proxies do in their error answers.
    """

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    action: Literal["answer", "hang", "reset", "slow_body", "slow_headers"] = "answer"
    seconds: float = 0.0
    body: str | None = None
    content_type: str = "application/json"
    echo_headers: bool = False


@dataclass
class ReceivedLog:
    """What the receiver got, per endpoint: record Ids (with repeats), call sizes and idempotency keys."""

    ids: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    call_sizes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    idempotency_keys: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    faults: dict[str, dict[int, Fault]] = field(default_factory=dict)
    before_answering: Callable[[str, int], None] | None = None
    after_acknowledging: Callable[[str, int], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, endpoint: str, records: list[dict[str, Any]], key: str) -> tuple[int, Fault | None]:
        """Count the call; return its number and the fault to act out (None: accept the records)."""
        with self.lock:
            sizes = self.call_sizes[endpoint]
            sizes.append(len(records))
            self.idempotency_keys[endpoint].append(key)
            fault = self.faults.get(endpoint, {}).get(len(sizes))
            if fault is None or fault.action == "slow_body":  # a slow 200 still accepts the records
                self.ids[endpoint].update(str(record.get("Id")) for record in records)
            return len(sizes), fault

    def received(self, endpoint: str) -> int:
        """Distinct records accepted at an endpoint."""
        with self.lock:
            return len(self.ids[endpoint])

    def duplicates(self, endpoint: str) -> int:
        """Records accepted more than once at an endpoint (each extra copy counts)."""
        with self.lock:
            return sum(count - 1 for count in self.ids[endpoint].values())

    def calls(self, endpoint: str) -> list[int]:
        """The number of records in each call to an endpoint, successful or not, in order."""
        with self.lock:
            return list(self.call_sizes[endpoint])


@dataclass
class RecordCollections:
    """The REST side of the receiver: each collection's records under the ids it gave, and every call.

    Each call to a collection, whatever its method, has a 1-based number there; `faults` act out
    on chosen numbers instead of answering, as `ReceivedLog.faults` do for the batch endpoints.
    """

    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    calls: dict[str, list[tuple[str, str, int | None]]] = field(default_factory=lambda: defaultdict(list))
    queries: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """The query string of each call, in the order of `calls`."""
    idempotency_keys: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    faults: dict[str, dict[int, Fault]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1001))

    def handle(
        self,
        method: str,
        collection: str,
        record_id: str,
        record: dict[str, Any] | None,
        key: str,
        query: str = "",
        collection_url: str = "",
    ) -> tuple[HTTPStatus, Any] | Fault:
        """Count the call, then act out its fault or answer as a REST API: POST creates (201, a new numeric
        id), PUT replaces and PATCH merges a known record (200), GET reads one or lists a page of them
        (`query` and the collection's URL, for its next link); an unknown id is 404."""
        with self.lock:
            calls = self.calls[collection]
            self.idempotency_keys[collection].append(key)
            self.queries[collection].append(query)
            fault = self.faults.get(collection, {}).get(len(calls) + 1)
            if fault is not None:
                calls.append((method, record_id, fault.status if fault.action == "answer" else None))
                return fault
            if method == "GET" and not record_id:
                status, payload = self._listing(collection, query, collection_url)
            else:
                status, payload = self._answer(method, collection, record_id, record)
            calls.append((method, record_id, status))
            return status, payload

    def seed(self, collection: str, records: Iterable[dict[str, Any]]) -> list[str]:
        """Store records as if each had been POSTed, without counting calls; the ids they were given."""
        with self.lock:
            stored = self.records[collection]
            ids: list[str] = []
            for record in records:
                ids.append(str(next(self._ids)))
                stored[ids[-1]] = dict(record)
            return ids

    def _listing(self, collection: str, query: str, collection_url: str) -> tuple[HTTPStatus, Any]:
        """One page of the collection in the order it was stored: `{"data", "next", "next_cursor", "total"}`.

        The position is `page` (from 1), `offset` or `cursor`, the size `page_size` or `limit`; the next
        link keeps the other parameters and carries a cursor: the id of the last record given.
        """
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        try:
            size = _whole_number(params, SIZE_PARAMS, DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
            since = _since(params.get(SINCE_PARAM))
            matching = [int(i) for i, r in self.records[collection].items() if _updated_since(r, since)]
            start = _start(params, size, matching)
        except ValueError as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        page = [{"id": i, **self.records[collection][str(i)]} for i in matching[start : start + size]]
        cursor = _cursor_after(page[-1]["id"]) if page and start + len(page) < len(matching) else None
        kept = [(name, value) for name, value in params.items() if name not in POSITION_PARAMS]
        next_link = f"{collection_url}?{urllib.parse.urlencode([*kept, ('cursor', cursor)])}" if cursor else None
        return HTTPStatus.OK, {"data": page, "next": next_link, "next_cursor": cursor, "total": len(matching)}

    def _answer(
        self, method: str, collection: str, record_id: str, record: dict[str, Any] | None
    ) -> tuple[HTTPStatus, Any]:
        stored = self.records[collection]
        if method == "POST" and not record_id and record is not None:
            new_id = next(self._ids)
            stored[str(new_id)] = record
            return HTTPStatus.CREATED, {"id": new_id}
        if method == "POST" or (method != "GET" and record is None):
            return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} is not allowed here"}
        if record_id not in stored:
            return HTTPStatus.NOT_FOUND, {"error": f"no record {record_id} in {collection}"}
        if method == "PUT":
            stored[record_id] = record or {}
        elif method == "PATCH":
            stored[record_id] = {**stored[record_id], **(record or {})}
        return HTTPStatus.OK, {"id": int(record_id), **stored[record_id]}

    def stored(self, collection: str) -> dict[str, dict[str, Any]]:
        """A collection's records by the id it gave them."""
        with self.lock:
            return dict(self.records[collection])

    def methods(self, collection: str) -> list[tuple[str, str, int | None]]:
        """(method, record id or "", status or None for a fault without an answer) of every call, in order."""
        with self.lock:
            return list(self.calls[collection])


def _whole_number(params: Mapping[str, str], names: Sequence[str], default: int, least: int, most: int) -> int:
    """The first of `names` given, as a whole number within bounds; ValueError naming it otherwise."""
    name = next((name for name in names if name in params), None)
    if name is None:
        return default
    text = params[name]
    if not (text.isascii() and text.isdigit()) or not least <= int(text) <= most:
        raise ValueError(f"{name} must be a whole number from {least} to {most}, got {text!r}")
    return int(text)


def _since(text: str | None) -> dt.datetime | None:
    """The `updated_since` filter as an aware datetime (naive means UTC); ValueError if it is not ISO-8601."""
    if text is None:
        return None
    try:
        return _aware(dt.datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"{SINCE_PARAM} must be an ISO-8601 date-time, got {text!r}") from None


def _updated_since(record: Mapping[str, Any], since: dt.datetime | None) -> bool:
    """Whether the record's `updated_at` is at or after `since`; a record without a readable one is not."""
    if since is None:
        return True
    try:
        return _aware(dt.datetime.fromisoformat(str(record.get(SINCE_FIELD)))) >= since
    except ValueError:
        return False


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _start(params: Mapping[str, str], size: int, matching: Sequence[int]) -> int:
    """Where the page starts among the matching records' ids: by page, offset or cursor (at most one given)."""
    given = [name for name in POSITION_PARAMS if name in params]
    if len(given) > 1:
        raise ValueError(f"give at most one of {', '.join(POSITION_PARAMS)}, got {', '.join(given)}")
    if "page" in params:
        return (_whole_number(params, ("page",), 1, 1, sys.maxsize) - 1) * size
    if "offset" in params:
        return _whole_number(params, ("offset",), 0, 0, sys.maxsize)
    if "cursor" in params:
        after = _cursor_id(params["cursor"])
        return bisect.bisect_right(matching, after)  # ids grow in the order records are stored
    return 0


def _cursor_after(record_id: int) -> str:
    """An opaque token for "the records after this id", as real APIs hand out."""
    return base64.urlsafe_b64encode(f"after:{record_id}".encode()).decode()


def _cursor_id(token: str) -> int:
    try:
        kind, _, record_id = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "after" and record_id.isdigit():
            return int(record_id)
    except ValueError:
        pass
    raise ValueError(f"cursor {token[:40]!r} is not one this API gave")


def send_json(
    handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> None:
    """Answer a request of any local server here with `status`, `headers` and `payload` as JSON."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class BackgroundServer:
    """An HTTP server on 127.0.0.1, served from a daemon thread while its `with` block runs."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0, name: str = "http-server") -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    def address(self, path: str) -> str:
        """The URL of `path` on this server (port 0 is resolved to the one it got)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class ReceivingApi(BackgroundServer):
    """The receiver running in a background thread; `base_url` ends with `/api/sync/`."""

    def __init__(self, api_key: str, api_key_header: str = "X-API-Key", port: int = 0) -> None:
        self.log = ReceivedLog()
        self.collections = RecordCollections()
        handler = _handler_for(self.log, self.collections, api_key, api_key_header)
        super().__init__(handler, port, name="receiving-api")

    @property
    def base_url(self) -> str:
        """Where the settings' `api.base_url` should point."""
        return self.address(PATH_PREFIX)

    def fail_calls(self, endpoint: str, faults: dict[int, int | Fault]) -> None:
        """Misbehave on the given 1-based call numbers at `endpoint` (an int is a plain status)."""
        self.log.faults[endpoint] = {n: Fault(f) if isinstance(f, int) else f for n, f in faults.items()}

    def records_url(self, collection: str) -> str:
        """The URL of a REST collection: POST to it creates, PUT or PATCH `/<id>` under it updates."""
        return self.address(f"{RECORDS_PREFIX}{collection}")

    def fail_record_calls(self, collection: str, faults: dict[int, int | Fault]) -> None:
        """Misbehave on the given 1-based call numbers at a REST collection (an int is a plain status)."""
        self.collections.faults[collection] = {n: Fault(f) if isinstance(f, int) else f for n, f in faults.items()}


def _handler_for(
    log: ReceivedLog, collections: RecordCollections, api_key: str, api_key_header: str
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real API
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall per answer

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path.startswith(RECORDS_PREFIX):
                return self._record_call(body)
            if not self.path.startswith(PATH_PREFIX):
                return self._answer(HTTPStatus.NOT_FOUND, {"error": "unknown endpoint"})
            if self.headers.get(api_key_header) != api_key:
                return self._answer(HTTPStatus.UNAUTHORIZED, {"error": f"missing or wrong {api_key_header}"})
            try:
                records = json.loads(body)
            except ValueError:
                return self._answer(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                return self._answer(HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON array of objects"})
            endpoint = self.path.removeprefix(PATH_PREFIX)
            number, fault = log.accept(endpoint, records, self.headers.get("Idempotency-Key", ""))
            if log.before_answering is not None:
                log.before_answering(endpoint, number)
            if fault is None:
                self._answer(HTTPStatus.OK, {"received": len(records)})
                if log.after_acknowledging is not None:
                    log.after_acknowledging(endpoint, number)
                return
            self._act_out(fault)

        def _record_call(self, body: bytes) -> None:
            """One call to a REST collection: `/api/records/<collection>[/<id>]` with a JSON object, or none."""
            if self.headers.get(api_key_header) != api_key:
                return self._answer(HTTPStatus.UNAUTHORIZED, {"error": f"missing or wrong {api_key_header}"})
            url = urllib.parse.urlsplit(self.path)
            collection, _, record_id = url.path.removeprefix(RECORDS_PREFIX).partition("/")
            record: dict[str, Any] | None = None
            if body:
                try:
                    record = json.loads(body)
                except ValueError:
                    return self._answer(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
                if not isinstance(record, dict):
                    return self._answer(HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON object"})
            key = self.headers.get("Idempotency-Key", "")
            host = self.headers.get("Host", "127.0.0.1")  # required by HTTP/1.1; links are built from it
            outcome = collections.handle(
                self.command,
                collection,
                urllib.parse.unquote(record_id),
                record,
                key,
                url.query,
                f"http://{host}{RECORDS_PREFIX}{collection}",
            )
            if isinstance(outcome, Fault):
                return self._act_out(outcome)
            status, payload = outcome
            self._send(status, json.dumps(payload).encode(), "application/json", {})

        def do_PUT(self) -> None:
            self._record_call(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        do_PATCH = do_GET = do_PUT

        def _act_out(self, fault: Fault) -> None:
            if fault.action == "hang":
                time.sleep(fault.seconds)
                self.close_connection = True
            elif fault.action == "reset":  # RST instead of FIN: the client sees "connection reset"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
            elif fault.action == "slow_body":
                data = json.dumps({"received": "slowly"}).encode()
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self._trickle(data, fault.seconds)
            elif fault.action == "slow_headers":
                data = json.dumps({"received": "slowly"}).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                self._trickle(head.encode() + b"X-Padding: " + b"." * 40 + b"\r\n\r\n", fault.seconds)
                self.wfile.write(data)
            else:
                payload: dict[str, Any] = {"error": "injected"}
                if fault.echo_headers:
                    payload["request_headers"] = dict(self.headers.items())
                data = fault.body.encode() if fault.body is not None else json.dumps(payload).encode()
                self._send(HTTPStatus(fault.status), data, fault.content_type, fault.headers)

        def _trickle(self, data: bytes, seconds: float) -> None:
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(seconds / len(data))

        def _answer(self, status: HTTPStatus, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json", headers or {})

        def _send(self, status: HTTPStatus, data: bytes, content_type: str, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the sync's own logs say what was sent."""

    return Handler
