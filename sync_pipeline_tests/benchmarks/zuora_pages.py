"""A static Zuora for the pull benchmark: every workflow page rendered once as bytes, served from its own process.

The simulator (`sync_pipeline.demo.zuora.ZuoraSimulator`) builds each page in Python per request,
which at a million workflows would make it the thing measured. This server answers the same calls in
the same shapes, `POST /oauth/token` (client credentials, form fields or HTTP Basic, `expires_in`
3599) and `GET /v1/workflows?page=&page_length=` (`data` plus `pagination.next_page` as an absolute
link, `RateLimit-*` headers, 401 without a token it issued), but each page's body is rendered once,
from the simulator's own records (`listed_workflow`), when the benchmark chooses what it serves:
`records` workflows (ids from 1001) at `page_length`, in one of two versions of every record,
`current` or `older` (updated a month earlier, with another name and status). Pages are kept per
version, so switching between the two costs nothing after the first time.

It counts what reached it: token requests, answered list calls, records served, refusals, and its own
CPU seconds (so a run can show the server was not what it measured). Control
calls: `POST /_bench/dataset` (what to serve and the one client's credentials), `GET /_bench/stats`,
`POST /_bench/reset`. Start it with `python -m sync_pipeline_tests.benchmarks.zuora_pages --port 0`;
it prints `READY <base_url>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import math
import secrets
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson

from sync_pipeline.demo.zuora import (
    DEFAULT_PAGE_LENGTH,
    FIRST_UPDATE,
    TOKEN_LIFETIME_SECONDS,
    TOKEN_PATH,
    WORKFLOWS_PATH,
    ZuoraTenant,
    listed_workflow,
)
from sync_pipeline_tests.benchmarks.receiver import READY_PREFIX, ServerProcess

FIRST_WORKFLOW_ID = 1001
"""The simulator's first workflow id; the n-th workflow served has id 1000 + n."""
VERSIONS = ("current", "older")
UPDATED_FROM = {"current": FIRST_UPDATE + dt.timedelta(milliseconds=250), "older": FIRST_UPDATE - dt.timedelta(days=30)}
"""When the first workflow of each version was updated; each next id one second later."""
UPDATE_STEP = dt.timedelta(seconds=1)
API_REQUESTS_PER_WINDOW = 50_000  # the simulator's default tenant budget, per minute
WINDOW_SECONDS = 60.0
DATASET_PATH = "/_bench/dataset"
STATS_PATH = "/_bench/stats"
RESET_PATH = "/_bench/reset"


def served_workflow(workflow_id: int, version: str) -> dict[str, Any]:
    """Workflow `workflow_id` as the `version` pages list it: the simulator's record, changed as that version."""
    updated_at = UPDATED_FROM[version] + (workflow_id - FIRST_WORKFLOW_ID) * UPDATE_STEP
    if version == "current":
        return listed_workflow(workflow_id, updated_at, name=f"workflow {workflow_id}", status="Active")
    return listed_workflow(workflow_id, updated_at, name=f"workflow {workflow_id} (draft)", status="Inactive")


def list_answer(data: list[dict[str, Any]], page: int, page_length: int, next_page: str | None) -> dict[str, Any]:
    """One answer of List workflows, in the simulator's shape."""
    return {"data": data, "pagination": {"next_page": next_page, "page": page, "page_length": page_length}}


def rendered_pages(base_url: str, records: int, page_length: int, version: str) -> list[bytes]:
    """Every page's JSON body, each but the last linking the next one on `base_url` as the simulator does."""
    count = math.ceil(records / page_length)
    last_id = FIRST_WORKFLOW_ID + records
    pages: list[bytes] = []
    for number in range(1, count + 1):
        first = FIRST_WORKFLOW_ID + (number - 1) * page_length
        data = [
            served_workflow(workflow_id, version) for workflow_id in range(first, min(first + page_length, last_id))
        ]
        more = number < count
        link = f"{base_url}{WORKFLOWS_PATH}?page={number + 1}&page_length={page_length}" if more else None
        pages.append(orjson.dumps(list_answer(data, number, page_length, link)))
    return pages


@dataclass
class Served:
    """What is being served: how many workflows, how many a page, which version, and their pages by version."""

    records: int = 0
    page_length: int = DEFAULT_PAGE_LENGTH
    version: str = "current"
    pages: dict[str, list[bytes]] = field(default_factory=dict)

    def page(self, number: int) -> bytes:
        """Page `number`'s body; past the last page, an empty one without a next link (as the simulator)."""
        bodies = self.pages.get(self.version, [])
        if 1 <= number <= len(bodies):
            return bodies[number - 1]
        return orjson.dumps(list_answer([], number, self.page_length, None))

    def records_on(self, number: int) -> int:
        """How many workflows page `number` lists."""
        start = (number - 1) * self.page_length
        return max(0, min(self.page_length, self.records - start))


@dataclass
class StaticZuora:
    """The server's state and its answers, independent of the socket code."""

    base_url: str
    client: ZuoraTenant | None = None
    served: Served = field(default_factory=Served)
    tokens: dict[str, float] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    window_ends: float = 0.0
    window_used: int = 0

    def answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[HTTPStatus, dict[str, str], bytes]:
        """Status, extra headers and body for one request."""
        path, _, query = target.partition("?")
        if method == "GET" and path == WORKFLOWS_PATH:
            return self._list(urllib.parse.parse_qs(query), headers.get("authorization", ""))
        if method == "POST" and path == TOKEN_PATH:
            return self._token(body, headers.get("authorization", ""))
        if method == "POST" and path == DATASET_PATH:
            return HTTPStatus.OK, {}, orjson.dumps(self._serve(orjson.loads(body)))
        if method == "GET" and path == STATS_PATH:
            return HTTPStatus.OK, {}, orjson.dumps({**self.counts, "cpu_seconds": time.process_time()})
        if method == "POST" and path == RESET_PATH:
            self.counts.clear()
            self.tokens.clear()
            return HTTPStatus.OK, {}, b"{}"
        return HTTPStatus.NOT_FOUND, {}, orjson.dumps({"message": f"no such resource: {path}"})

    def _serve(self, asked: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        self.client = ZuoraTenant("bench", asked["client_id"], asked["client_secret"])
        records, page_length, version = int(asked["records"]), int(asked["page_length"]), str(asked["version"])
        if version not in VERSIONS:
            raise ValueError(f"version {version!r}: one of {', '.join(VERSIONS)}")
        if (records, page_length) != (self.served.records, self.served.page_length):
            self.served = Served(records, page_length)
        self.served.version = version
        if version not in self.served.pages:
            self.served.pages[version] = rendered_pages(self.base_url, records, page_length, version)
        pages = len(self.served.pages[version])
        return {
            "pages": pages,
            "bytes": sum(map(len, self.served.pages[version])),
            "seconds": time.perf_counter() - started,
        }

    def _token(self, body: bytes, authorization: str) -> tuple[HTTPStatus, dict[str, str], bytes]:
        self.counts["token_requests"] += 1
        form = {name: values[0] for name, values in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() == "basic":  # RFC 6749 lets a client send its credentials either way
            user, _, password = base64.b64decode(encoded).decode("utf-8", "replace").partition(":")
            form.setdefault("client_id", urllib.parse.unquote(user))
            form.setdefault("client_secret", urllib.parse.unquote(password))
        client = self.client
        if form.get("grant_type") != "client_credentials":
            return self._refused(HTTPStatus.BAD_REQUEST, {"error": "unsupported_grant_type"})
        if client is None or form.get("client_id") != client.client_id:
            return self._refused(HTTPStatus.UNAUTHORIZED, {"error": "invalid_client"})
        if not secrets.compare_digest(form.get("client_secret", ""), client.client_secret):
            return self._refused(HTTPStatus.UNAUTHORIZED, {"error": "invalid_client"})
        token = secrets.token_hex(16)
        self.tokens[token] = time.monotonic() + TOKEN_LIFETIME_SECONDS
        answer = {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "scope": "service.workflow.read",
            "jti": secrets.token_hex(16),
        }
        return HTTPStatus.OK, {}, orjson.dumps(answer)

    def _list(self, query: dict[str, list[str]], authorization: str) -> tuple[HTTPStatus, dict[str, str], bytes]:
        now = time.monotonic()
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or self.tokens.get(token, 0.0) <= now:
            return self._refused(HTTPStatus.UNAUTHORIZED, {"message": "Authentication error"})
        if now >= self.window_ends:
            self.window_ends, self.window_used = now + WINDOW_SECONDS, 0
        limits = {
            "RateLimit-Limit": f"{API_REQUESTS_PER_WINDOW}, {API_REQUESTS_PER_WINDOW};w={WINDOW_SECONDS:g}",
            "RateLimit-Remaining": str(max(0, API_REQUESTS_PER_WINDOW - self.window_used - 1)),
            "RateLimit-Reset": str(max(1, math.ceil(self.window_ends - now))),
        }
        if self.window_used >= API_REQUESTS_PER_WINDOW:
            self.counts["throttled"] += 1
            return HTTPStatus.TOO_MANY_REQUESTS, {**limits, "Retry-After": limits["RateLimit-Reset"]}, b"{}"
        self.window_used += 1
        page, page_length = query.get("page", ["1"])[-1], query.get("page_length", [str(DEFAULT_PAGE_LENGTH)])[-1]
        if not page.isdigit() or int(page) < 1 or page_length != str(self.served.page_length):
            message = f"page {page!r}, page_length {page_length!r}: serving page_length {self.served.page_length}"
            return self._refused(HTTPStatus.BAD_REQUEST, {"message": message})
        number = int(page)
        self.counts["list_calls"] += 1
        self.counts["records_served"] += self.served.records_on(number)
        return HTTPStatus.OK, limits, self.served.page(number)

    def _refused(self, status: HTTPStatus, payload: dict[str, Any]) -> tuple[HTTPStatus, dict[str, str], bytes]:
        self.counts[f"http_{status.value}"] += 1
        return status, {}, orjson.dumps(payload)


def _head(status: HTTPStatus, headers: dict[str, str], length: int, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {length}", f"Connection: {'keep-alive' if keep_alive else 'close'}", "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def serve_connection(zuora: StaticZuora, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve HTTP/1.1 requests on one keep-alive connection until the client closes it or asks to."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            request_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            method, target, version = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
            try:
                status, extra, payload = zuora.answer(method, target, headers, body)
            except (ValueError, KeyError) as exc:  # a control call the runner got wrong
                status, extra, payload = HTTPStatus.BAD_REQUEST, {}, orjson.dumps({"message": str(exc)})
            writer.write(_head(status, extra, len(payload), keep_alive))
            writer.write(payload)
            await writer.drain()
            if not keep_alive:
                return
    finally:
        with contextlib.suppress(ConnectionError):
            writer.close()


async def serve(host: str, port: int) -> None:
    """Listen, print READY with the base URL, serve until terminated."""
    holder: list[StaticZuora] = []

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(holder[0], reader, writer)

    server = await asyncio.start_server(connected, host, port, limit=64 * 1024)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    holder.append(StaticZuora(f"http://{bound_host}:{bound_port}"))
    print(f"{READY_PREFIX}{holder[0].base_url}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Run the server until terminated."""
    parser = argparse.ArgumentParser(description="Serve pre-rendered Zuora workflow pages on 127.0.0.1.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop  # optional: a faster event loop when installed

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


class StaticZuoraProcess(ServerProcess):
    """The server as a child process, with a client for its control calls; a context manager."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(__name__, "static Zuora", port)

    @property
    def host_port(self) -> str:
        """`127.0.0.1:<port>`: what the customers settings accept as a simulator."""
        return self.base_url.removeprefix("http://")

    def serve(self, client: ZuoraTenant, records: int, page_length: int, version: str) -> dict[str, Any]:
        """Serve `records` workflows of `version`, `page_length` a page, to `client`; what rendering took."""
        asked = {
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "records": records,
            "page_length": page_length,
            "version": version,
        }
        response = self._session.post(self.base_url + DATASET_PATH, data=orjson.dumps(asked), timeout=600)
        response.raise_for_status()
        rendered: dict[str, Any] = response.json()
        return rendered

    def stats(self) -> dict[str, float]:
        """What reached the server since the last reset (a count absent is 0), and its CPU seconds so far."""
        response = self._session.get(self.base_url + STATS_PATH, timeout=30)
        response.raise_for_status()
        counts: dict[str, float] = response.json()
        return counts

    def reset(self) -> None:
        """Zero the counts and forget every token issued."""
        self._session.post(self.base_url + RESET_PATH, timeout=30).raise_for_status()


if __name__ == "__main__":
    main()
