"""SIGKILL the sync at many random points and check nothing is lost and duplicates stay bounded.

Kill points: after a random delay (reading, posting or writing), in the middle of a POST (the
receiver has the records but never answers), and right after a 2xx, before the tracking write.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline_tests.fault.conftest import FaultLedger, fault_settings, seed_users, sync_users, tracked_users

ROWS = 40_000
BATCH = 1_000
KILLS = 12
SECONDS_PER_CALL = 0.1  # the receiver's own latency, so a kill can land anywhere in a run
REPO_ROOT = Path(__file__).resolve().parents[2]


class Killer:
    """Kills the current worker when the receiver reaches the armed call, before or after answering."""

    def __init__(self) -> None:
        self.pid = 0
        self.armed_call: int | None = None
        self.when = "before_answering"
        self.lock = threading.Lock()

    def arm(self, pid: int, call_number: int, when: str) -> None:
        with self.lock:
            self.pid, self.armed_call, self.when = pid, call_number, when

    def hook(self, when: str) -> Callable[[str, int], None]:
        def fire(endpoint: str, number: int) -> None:
            if when == "before_answering":
                time.sleep(SECONDS_PER_CALL)
            with self.lock:
                if self.armed_call == number and self.when == when and self.pid:
                    os.kill(self.pid, signal.SIGKILL)
                    self.armed_call = None

        return fire


def start_worker(config: str) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "sync_pipeline_tests.fault.crash_worker", config],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    return worker


def test_hard_kills_at_random_points_lose_nothing_and_duplicate_at_most_one_batch_each(
    receiver: ReceivingApi, pg_urls: dict[str, str], ledger: FaultLedger
) -> None:
    settings = fault_settings(receiver, batch_size=BATCH)
    seed_users(pg_urls, ROWS, settings)
    config = json.dumps({"urls": pg_urls, "settings": settings.model_dump(mode="json")})
    killer = Killer()
    receiver.log.before_answering = killer.hook("before_answering")
    receiver.log.after_acknowledging = killer.hook("after_acknowledging")
    rng = random.Random(20261123)
    duplicates_after: list[int] = [0]
    kills = 0

    for round_number in range(KILLS):
        worker = start_worker(config)
        mode = ("random", "before_answering", "after_acknowledging")[round_number % 3]
        if mode == "random":
            try:
                worker.wait(timeout=rng.uniform(0.05, 2.5))
            except subprocess.TimeoutExpired:
                worker.send_signal(signal.SIGKILL)
        else:
            calls_so_far = len(receiver.log.calls("users"))
            killer.arm(worker.pid, calls_so_far + rng.randint(1, 3), mode)
        worker.wait(timeout=120)
        kills += worker.returncode == -signal.SIGKILL
        duplicates_after.append(receiver.log.duplicates("users"))
        assert tracked_users(pg_urls["log_db"]) <= set(receiver.log.ids["users"]), (
            "a record is tracked that the receiver never acknowledged"
        )

    final = sync_users(pg_urls, settings)
    duplicates_after.append(receiver.log.duplicates("users"))

    # A kill's duplicates appear in the run after it, which resends the one unacknowledged batch.
    per_kill = [later - earlier for earlier, later in itertools.pairwise(duplicates_after[1:])]
    ledger.duplicates_per_kill.extend(per_kill)
    ledger.records_lost += ROWS - receiver.log.received("users")
    assert final.stopped_because is None
    assert kills >= KILLS - 2, f"only {kills} of {KILLS} workers were actually killed mid-run"
    assert receiver.log.received("users") == ROWS
    assert len(tracked_users(pg_urls["log_db"])) == ROWS
    assert max(per_kill) <= BATCH, per_kill
