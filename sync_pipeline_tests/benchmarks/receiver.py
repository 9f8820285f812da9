"""A fast receiving API for the benchmark, run in its own process so it never takes the measured GIL.

It accepts JSON arrays of objects POSTed under `/api/sync/<endpoint>` over HTTP/1.1 keep-alive,
answers 200 (after an optional per-request latency, served concurrently so several requests can be
in flight), and keeps, per endpoint, every record's Id as 16 raw bytes in a set: 1,000,000 Ids cost
about 90 MB here and none in the process being measured. Its counts are read with
`GET /_bench/stats`; `POST /_bench/reset` clears them, `POST /_bench/preload/<endpoint>` marks Ids
as already received (what "already tracked" means at the far end), `POST /_bench/config` sets the
latency. Start it with `python -m sync_pipeline_tests.benchmarks.receiver --port 0`; it prints
`READY <base_url>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import subprocess
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

import orjson
import requests

PATH_PREFIX = "/api/sync/"
STATS_PATH = "/_bench/stats"
RESET_PATH = "/_bench/reset"
CONFIG_PATH = "/_bench/config"
PRELOAD_PREFIX = "/_bench/preload/"
READY_PREFIX = "READY "
MAX_HEADER_BYTES = 64 * 1024

_GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_CANONICAL_GUID = re.compile(_GUID)
_CANONICAL_GUIDS = re.compile(f"(?:{_GUID})*")  # fixed width, so a run matches only if every GUID does


def id_key(value: object) -> tuple[bytes, bool]:
    """The Id as 16 bytes for the set, and whether it was in the canonical lower-case GUID form."""
    if isinstance(value, str):
        if _CANONICAL_GUID.fullmatch(value):
            return bytes.fromhex(value.replace("-", "")), True
        try:
            return uuid.UUID(value).bytes, False
        except ValueError:
            return value.encode("utf-8"), False
    return repr(value).encode("utf-8"), False


@dataclass
class EndpointTally:
    """What one endpoint received since the last reset."""

    calls: int = 0
    records: int = 0
    duplicates: int = 0
    non_canonical_ids: int = 0
    preloaded: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    ids: set[bytes] = field(default_factory=set)

    def add(self, ids: Iterable[object]) -> int:
        """Hold these Ids; returns how many of them were already held (or repeated in the call)."""
        values = list(ids)
        keys = self._canonical_keys(values)
        if keys is None:
            keys = []
            for value in values:
                key, canonical = id_key(value)
                keys.append(key)
                if not canonical:
                    self.non_canonical_ids += 1
        before = len(self.ids)
        self.ids.update(keys)
        return len(keys) - (len(self.ids) - before)

    @staticmethod
    def _canonical_keys(values: list[object]) -> list[bytes] | None:
        """The fast path, in bulk: 16-byte keys when every value is a canonical GUID string, else None."""
        if not all(type(value) is str for value in values):
            return None
        joined = "".join(values)  # type: ignore[arg-type]  # all str, checked above
        if not _CANONICAL_GUIDS.fullmatch(joined):
            return None
        raw = bytes.fromhex(joined.replace("-", ""))
        return [raw[start : start + 16] for start in range(0, len(raw), 16)]

    def as_dict(self) -> dict[str, int]:
        """The counts, as `/_bench/stats` reports them; `distinct` includes preloaded Ids."""
        return {
            "calls": self.calls,
            "records": self.records,
            "distinct": len(self.ids),
            "duplicates": self.duplicates,
            "non_canonical_ids": self.non_canonical_ids,
            "preloaded": self.preloaded,
            "max_in_flight": self.max_in_flight,
        }


@dataclass
class Receiver:
    """The receiver's state and its request handling, independent of the socket code."""

    latency_seconds: float = 0.0
    api_key: str | None = None
    api_key_header: str = "x-api-key"
    endpoints: dict[str, EndpointTally] = field(default_factory=dict)

    def tally(self, endpoint: str) -> EndpointTally:
        """The endpoint's counts, created on first use."""
        return self.endpoints.setdefault(endpoint, EndpointTally())

    async def dispatch(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[HTTPStatus, dict[str, Any]]:
        """Answer one request: a sync batch, or one of the benchmark's control calls."""
        if method == "POST" and path.startswith(PATH_PREFIX):
            return await self._receive_batch(path.removeprefix(PATH_PREFIX), headers, body)
        if method == "GET" and path == STATS_PATH:
            return HTTPStatus.OK, self.stats()
        if method == "POST" and path == RESET_PATH:
            self.endpoints.clear()
            return HTTPStatus.OK, {"reset": True}
        if method == "POST" and path == CONFIG_PATH:
            config = orjson.loads(body or b"{}")
            self.latency_seconds = float(config.get("latency_ms", self.latency_seconds * 1000)) / 1000
            return HTTPStatus.OK, {"latency_ms": self.latency_seconds * 1000}
        if method == "POST" and path.startswith(PRELOAD_PREFIX):
            ids = orjson.loads(body)
            tally = self.tally(path.removeprefix(PRELOAD_PREFIX))
            tally.add(ids)
            tally.preloaded += len(ids)
            return HTTPStatus.OK, {"preloaded": len(ids)}
        return HTTPStatus.NOT_FOUND, {"error": f"no route for {method} {path}"}

    def stats(self) -> dict[str, Any]:
        """Every endpoint's counts and the latency in force."""
        return {
            "latency_ms": self.latency_seconds * 1000,
            "endpoints": {name: tally.as_dict() for name, tally in self.endpoints.items()},
        }

    async def _receive_batch(
        self, endpoint: str, headers: dict[str, str], body: bytes
    ) -> tuple[HTTPStatus, dict[str, Any]]:
        if self.api_key is not None and headers.get(self.api_key_header) != self.api_key:
            return HTTPStatus.UNAUTHORIZED, {"error": f"missing or wrong {self.api_key_header}"}
        tally = self.tally(endpoint)
        tally.in_flight += 1
        tally.max_in_flight = max(tally.max_in_flight, tally.in_flight)
        try:
            if self.latency_seconds > 0:
                await asyncio.sleep(self.latency_seconds)
            try:
                records = orjson.loads(body)
            except orjson.JSONDecodeError:
                return HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"}
            if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
                return HTTPStatus.BAD_REQUEST, {"error": "body must be a JSON array of objects"}
            tally.calls += 1
            tally.records += len(records)
            tally.duplicates += tally.add(record.get("Id") for record in records)
            return HTTPStatus.OK, {"received": len(records)}
        finally:
            tally.in_flight -= 1


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    request_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, target, version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target.split("?", 1)[0], version, headers


def _response(status: HTTPStatus, payload: dict[str, Any], keep_alive: bool) -> bytes:
    body = orjson.dumps(payload)
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def serve_connection(receiver: Receiver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve requests on one connection until the client closes it or asks to."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                writer.write(_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, {"error": "header"}, False))
                return
            method, path, version, headers = _parse_head(head)
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
            if "chunked" in headers.get("transfer-encoding", "").lower():
                writer.write(_response(HTTPStatus.LENGTH_REQUIRED, {"error": "send Content-Length"}, False))
                return
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            status, payload = await receiver.dispatch(method, path, headers, body)
            writer.write(_response(status, payload, keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


async def serve(receiver: Receiver, host: str, port: int) -> None:
    """Listen on `host:port` (0 picks a free port), announce the base URL and serve forever."""
    server = await asyncio.start_server(
        lambda reader, writer: serve_connection(receiver, reader, writer), host, port, limit=MAX_HEADER_BYTES
    )
    bound_port = server.sockets[0].getsockname()[1]
    print(f"{READY_PREFIX}http://{host}:{bound_port}{PATH_PREFIX}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m sync_pipeline_tests.benchmarks.receiver [--port N] [--latency-ms MS] [--api-key K]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering each batch")
    parser.add_argument("--api-key", default=None, help="answer 401 unless this key is sent")
    parser.add_argument("--api-key-header", default="X-API-Key")
    args = parser.parse_args(argv)
    receiver = Receiver(args.latency_ms / 1000, args.api_key, args.api_key_header.lower())
    try:
        import uvloop  # optional: a faster event loop when installed

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(receiver, args.host, args.port))


class ServerProcess:
    """A benchmark server as a child process (`python -m <module> --port N …`), which prints
    `READY <base url>` once it listens, with a session for its control calls; a context manager."""

    def __init__(self, module: str, name: str, port: int, *options: str) -> None:
        self._command = [sys.executable, "-m", module, "--port", str(port), *options]
        self._name = name
        self._process: subprocess.Popen[str] | None = None
        self._session = requests.Session()
        self.base_url = ""

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            self._process.kill()
            raise RuntimeError(f"{self._name} did not start: {line!r}")
        self.base_url = line.removeprefix(READY_PREFIX).strip()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._session.close()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)


class ReceiverProcess(ServerProcess):
    """The receiver as a child process, with a client for its control calls; a context manager."""

    def __init__(self, latency_ms: float = 0.0, api_key: str | None = None, port: int = 0) -> None:
        key = ["--api-key", api_key] if api_key is not None else []
        super().__init__(__name__, "benchmark receiver", port, "--latency-ms", str(latency_ms), *key)

    @property
    def _root(self) -> str:
        return self.base_url.removesuffix(PATH_PREFIX)

    def stats(self, endpoint: str) -> dict[str, int]:
        """One endpoint's counts (all zero if it received nothing)."""
        response = self._session.get(self._root + STATS_PATH, timeout=30)
        response.raise_for_status()
        counts: dict[str, int] = response.json()["endpoints"].get(endpoint, EndpointTally().as_dict())
        return counts

    def reset(self) -> None:
        """Forget every Id and count."""
        self._session.post(self._root + RESET_PATH, timeout=30).raise_for_status()

    def set_latency(self, latency_ms: float) -> None:
        """Delay every batch answer by `latency_ms` from now on."""
        self._session.post(self._root + CONFIG_PATH, data=orjson.dumps({"latency_ms": latency_ms}), timeout=30)

    def preload(self, endpoint: str, ids: Sequence[str], chunk: int = 100_000) -> None:
        """Mark `ids` as already received at `endpoint` (they count as duplicates if sent again)."""
        for start in range(0, len(ids), chunk):
            body = orjson.dumps(list(ids[start : start + chunk]))
            self._session.post(self._root + PRELOAD_PREFIX + endpoint, data=body, timeout=120).raise_for_status()


if __name__ == "__main__":
    main()
