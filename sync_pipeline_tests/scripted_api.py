"""A real HTTP API on 127.0.0.1 that answers any method with scripted answers and keeps every request.

Unlike the demo receiver it takes GET as well as POST (pulls, not only pushes) and sees every
request, the ones it refuses with 401 included, so a test can count what reached the wire.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from sync_pipeline.demo.receiver import BackgroundServer


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a status with headers and body, or a connection reset instead of an answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = '{"ok": true}'
    action: Literal["answer", "reset"] = "answer"


@dataclass(frozen=True)
class SeenRequest:
    """One request as it arrived: method, path with its query, headers and body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedApi(BackgroundServer):
    """Answers the n-th request with the n-th scripted answer, and 200 `{"ok": true}` once they run out."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        super().__init__(_handler_for(self), name="scripted-api")

    def url(self, path: str) -> str:
        """The URL of `path` on this server."""
        return self.address(path)

    def next_answer(self, request: SeenRequest) -> Answer:
        """Keep the request; the answer scripted for it."""
        with self._lock:
            self.requests.append(request)
            return self.answers.pop(0) if self.answers else Answer()


def _handler_for(api: ScriptedApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real API

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = api.next_answer(SeenRequest(self.command, self.path, dict(self.headers.items()), body))
            if answer.action == "reset":  # RST instead of FIN: the client sees "connection reset"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            data = answer.body.encode()
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read `requests` instead."""

    return Handler
