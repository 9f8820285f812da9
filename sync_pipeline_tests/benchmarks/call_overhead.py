"""Per-call cost of the HTTP path: `BatchSender.send` of one-record batches, through the real client
against the benchmark receiver (its own process), and through an in-memory API (the retry loop and
the sender alone, no socket). Tracking is a no-op, so the figures are the call path and nothing else.

    python -m sync_pipeline_tests.benchmarks.call_overhead [--calls 3000] [--rounds 3] [--against REV]

With `--against REV` the same measurement also runs on the package as it was at git revision REV
(exported with `git archive` into a temporary folder), the two alternating round by round in fresh
processes, so both see the same machine load. It prints microseconds per call, best and median.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sync_pipeline_tests.benchmarks.receiver import ReceiverProcess

API_KEY = "bench-key"
WARM_UP_CALLS = 100
REPO = Path(__file__).resolve().parents[2]
MODULE = "sync_pipeline_tests.benchmarks.call_overhead"


class NoTracking:
    """A tracking store that keeps nothing: the Log database is not what this measures."""

    def record_delivered(self, *args: Any, **kwargs: Any) -> None:
        """Keep nothing."""

    def record_call(self, *args: Any, **kwargs: Any) -> None:
        """Keep nothing."""

    def record_rejected(self, *args: Any, **kwargs: Any) -> None:
        """Keep nothing."""


class InMemoryApi:
    """Answers every batch 200 with a JSON acknowledgement, without a socket."""

    def post_batch(self, url: str, body: bytes, idempotency_key: str) -> Any:
        """The acknowledgement of `body`."""
        from sync_pipeline.engine.http.api import ApiResponse

        return ApiResponse(200, '{"accepted": 1}', content_type="application/json")


def microseconds_per_call(api: Any, url: str, calls: int) -> float:
    """Send `calls` one-record batches after a warm-up; the mean wall time of one send."""
    from sync_pipeline.engine.batching import Batch
    from sync_pipeline.engine.sinks.http_batch import BatchSender, RetryPolicy

    sender = BatchSender("Users", url, api, NoTracking(), RetryPolicy(), 12, logging.getLogger("bench"))
    batches = [
        Batch([entity_id], [{"Id": entity_id, "Name": f"user {n}"}])
        for n in range(WARM_UP_CALLS + calls)
        for entity_id in [str(uuid.uuid4())]
    ]
    for batch in batches[:WARM_UP_CALLS]:
        sender.send(batch)
    started = time.perf_counter()
    for batch in batches[WARM_UP_CALLS:]:
        sender.send(batch)
    elapsed = time.perf_counter() - started
    assert sender.counts.sent == WARM_UP_CALLS + calls, sender.counts
    return elapsed / calls * 1e6


def measure(base_url: str, calls: int) -> dict[str, Any]:
    """One round in this process: in memory, then over HTTP."""
    import sync_pipeline
    from sync_pipeline.resources.api_client import HttpSyncApiClient

    url = base_url + "users"
    return {
        "package": str(Path(sync_pipeline.__file__).parent),
        "in_memory_us": microseconds_per_call(InMemoryApi(), url, calls),
        "http_us": microseconds_per_call(HttpSyncApiClient(api_key=API_KEY), url, calls),
    }


def export_revision(revision: str, into: Path) -> Path:
    """The `sync_pipeline` package as it was at `revision`, unpacked under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", revision, "sync_pipeline"],
        check=True,
        capture_output=True,
    ).stdout
    tar_path = into / "package.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return into


def run_round(base_url: str, calls: int, package_root: Path | None) -> dict[str, Any]:
    """One round in a fresh process, on the working tree's package or on an exported one (first on the
    path; the process starts outside the repo, whose folder would otherwise come first)."""
    roots = [str(package_root)] if package_root is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*roots, str(REPO)])}
    command = [sys.executable, "-m", MODULE, "--worker", base_url, "--calls", str(calls)]
    cwd = package_root or Path("/")
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=cwd).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", metavar="REV", help="also measure the package at this git revision")
    parser.add_argument("--worker", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.calls)))
        return
    with tempfile.TemporaryDirectory() as scratch, ReceiverProcess(api_key=API_KEY) as receiver:
        packages: dict[str, Path | None] = {"working tree": None}
        if args.against:
            packages[args.against] = export_revision(args.against, Path(scratch))
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in packages}
        for _ in range(args.rounds):
            for name, root in packages.items():
                results[name].append(run_round(receiver.base_url, args.calls, root))
    print(f"{args.calls} calls per round, {args.rounds} rounds; microseconds per call (best / median)")
    print(f"{'package':<16} {'in memory':>18} {'over HTTP':>18}")
    for name, rounds in results.items():
        cells = []
        for key in ("in_memory_us", "http_us"):
            values = [r[key] for r in rounds]
            cells.append(f"{min(values):8.1f} / {statistics.median(values):7.1f}")
        print(f"{name:<16} {cells[0]:>18} {cells[1]:>18}   ({rounds[0]['package']})")


if __name__ == "__main__":
    main()
