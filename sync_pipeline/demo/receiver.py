"""A local receiving API on 127.0.0.1: the third-party system, for the demo and the tests.

It accepts JSON arrays POSTed under `/api/sync/<endpoint>`, checks the API key header, keeps
every record's Id per endpoint (so duplicates are visible) and can be told to fail chosen calls.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH_PREFIX = "/api/sync/"


@dataclass
class ReceivedLog:
    """What the receiver got, per endpoint: record Ids (with repeats) and the size of every call."""

    ids: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    call_sizes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    failures_to_inject: dict[str, dict[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, endpoint: str, records: list[dict[str, Any]]) -> int:
        """Count the call and return the status to answer (200, or an injected failure)."""
        with self.lock:
            sizes = self.call_sizes[endpoint]
            sizes.append(len(records))
            status = self.failures_to_inject.get(endpoint, {}).get(len(sizes), HTTPStatus.OK)
            if status == HTTPStatus.OK:
                self.ids[endpoint].update(str(record.get("Id")) for record in records)
            return int(status)

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


class ReceivingApi:
    """The receiver running in a background thread; `base_url` ends with `/api/sync/`."""

    def __init__(self, api_key: str, api_key_header: str = "X-API-Key", port: int = 0) -> None:
        self.log = ReceivedLog()
        handler = _handler_for(self.log, api_key, api_key_header)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="receiving-api", daemon=True)

    @property
    def base_url(self) -> str:
        """Where the settings' `api.base_url` should point."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH_PREFIX}"

    def fail_calls(self, endpoint: str, call_numbers: dict[int, int]) -> None:
        """Answer the given 1-based call numbers at `endpoint` with the given HTTP status."""
        self.log.failures_to_inject[endpoint] = dict(call_numbers)

    def __enter__(self) -> ReceivingApi:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler_for(log: ReceivedLog, api_key: str, api_key_header: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real API

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
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
            status = log.accept(self.path.removeprefix(PATH_PREFIX), records)
            self._answer(HTTPStatus(status), {"received": len(records)} if status == 200 else {"error": "injected"})

        def _answer(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the sync's own logs say what was sent."""

    return Handler
