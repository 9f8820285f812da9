"""SIGKILL the Zuora pull at many points, three customers in turn, while their workflows change in Zuora; then
a clean run of each: no workflow lost, none stored twice or under another customer, none left stale.

Kill points: while a page is being read (before Zuora answers it), in the middle of an upsert (its
statement waiting on a row the test holds, so the kill lands inside the write's transaction), and
after a random delay from the first page on (reading, writing, marking deleted rows, or done).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sync_pipeline.demo.zuora import ZuoraTenant
from sync_pipeline.demo.zuora_seed import simulator_address
from sync_pipeline_tests.fault.conftest import FaultLedger
from sync_pipeline_tests.fault.zuora_pull import ZuoraPull, settle, zuora_pull, zuora_time

ROUNDS = 12
WORKFLOWS = {"acme": 800, "beta": 600, "gamma": 400}
"""Sixteen, twelve and eight pages: runs long enough to be killed anywhere."""
SETTINGS = {
    "batch_size": 100,
    "api": {"timeout_seconds": 1},
    "retries": {"max_delay_seconds": 0.25},
    "locking": {"lease_seconds": 2.5, "wait_seconds": 6},
}
"""Two pages a written batch; a killed run's lock lapses soon (a lease just over what these timeouts need), and
a later run of that customer waits for it."""
KILL_POINTS = ("reading a page", "mid-upsert", "random")
REPO_ROOT = Path(__file__).resolve().parents[2]
WAITING_ON_A_LOCK = sa.text(  # outside a transaction, or PostgreSQL answers from the snapshot of its first read
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


class PullWorker:
    """The process that forks each run of the pull (see pull_worker.py): a run is a process of its own."""

    def __init__(self, pull: ZuoraPull, log: Path) -> None:
        config = {"address": simulator_address(pull.zuora), "settings": pull.settings, "customers": list(pull.tenants)}
        self.log = log
        with log.open("w") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "sync_pipeline_tests.fault.pull_worker", json.dumps(config)],
                cwd=REPO_ROOT,
                env={**os.environ, **pull.env},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        assert self._read() == "ready"

    def start(self, customer: str) -> int:
        """Start a run of the customer's partition; its process id."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"{customer}\n")
        self._process.stdin.flush()
        word, pid = self._read().split()
        assert word == "started"
        return int(pid)

    def ended(self, pid: int) -> int:
        """Wait for the run's process to end; its exit code (-9 when it was killed)."""
        word, ended, code = self._read().split()
        assert (word, int(ended)) == ("ended", pid)
        return int(code)

    def close(self) -> None:
        """Let the worker exit, its runs all ended."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()
        self._process.wait(timeout=60)
        self._process.stdout.close()

    def _read(self) -> str:
        assert self._process.stdout is not None
        return self._process.stdout.readline().strip()


def change_some(pull: ZuoraPull, tenant: ZuoraTenant, rng: random.Random, round_number: int) -> int:
    """Zuora changes between two runs: three workflows edited, one added, one deleted; one edited one's id."""
    ids = pull.zuora.workflow_ids(tenant)
    edited = rng.sample(ids, 3)
    for workflow_id in edited:
        pull.zuora.put_workflow(tenant, workflow_id, name=f"edited before round {round_number}")
    pull.zuora.put_workflow(tenant, name=f"added before round {round_number}")
    pull.zuora.delete_workflow(tenant, rng.choice([n for n in ids if n not in edited]))
    return edited[0]


def kill(pid: int) -> None:
    """SIGKILL the run's process unless it has ended already."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Whether the run's process is still there (its parent reaps it as soon as it ends)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_reading_page(pull: ZuoraPull, customer: str, worker: PullWorker, page: int) -> int:
    """Kill the run when Zuora has served page `page` of the customer, before answering with it."""
    pids: list[int] = []

    def on_page(tenant: ZuoraTenant, number: int) -> None:
        if pids and tenant.name == customer and number == page:
            kill(pids.pop())

    pull.zuora.after_page = on_page
    pid = worker.start(customer)
    pids.append(pid)
    return pid


def kill_mid_upsert(pull: ZuoraPull, customer: str, worker: PullWorker, held: int) -> int:
    """Hold the row of workflow `held` (edited in Zuora, so the run writes it) and kill the run once its
    upsert waits on that row: inside the write's transaction."""
    table = pull.workflows
    with pull.app.connect() as holding, pull.app.connect().execution_options(isolation_level="AUTOCOMMIT") as watching:
        holding.begin()
        row = {
            "customer_id": customer,
            "zuora_id": held,
            "name": "held by the test",
            "updated_at": dt.datetime(2000, 1, 1),
            "export_status": "failed",
        }
        holding.execute(postgresql.insert(table).values(row).on_conflict_do_nothing())
        mine = (table.c.customer_id == customer) & (table.c.zuora_id == held)
        holding.execute(sa.select(table.c.zuora_id).where(mine).with_for_update())
        pid = worker.start(customer)
        deadline = time.monotonic() + 60
        while running(pid) and time.monotonic() < deadline:
            if watching.execute(WAITING_ON_A_LOCK).scalar_one():
                kill(pid)
                break
            time.sleep(0.005)
        holding.rollback()
    return pid


def kill_at_random(pull: ZuoraPull, customer: str, worker: PullWorker, delay: float) -> int:
    """Kill the run `delay` seconds after its first page was served, wherever it is then."""
    first_page = threading.Event()
    pull.zuora.after_page = lambda tenant, number: first_page.set() if tenant.name == customer else None
    pid = worker.start(customer)
    if first_page.wait(timeout=60):
        time.sleep(delay)
    kill(pid)
    return pid


def test_hard_kills_mid_pull_lose_no_workflow_duplicate_none_and_leave_none_stale(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], ledger: FaultLedger, tmp_path: Path
) -> None:
    with zuora_pull(monkeypatch, WORKFLOWS, SETTINGS) as pull:
        worker = PullWorker(pull, tmp_path / "worker.log")
        rng = random.Random(20261201)
        kills, per_kill = 0, []
        try:
            for round_number in range(ROUNDS):
                customer = sorted(WORKFLOWS)[round_number % 3]  # in turn: its last killed run's lease lapses meanwhile
                tenant = pull.tenants[customer]
                edited = change_some(pull, tenant, rng, round_number)
                duplicates_before = pull.duplicates()
                point = KILL_POINTS[round_number // 3 % 3]
                if point == "reading a page":
                    pid = kill_reading_page(pull, customer, worker, rng.randint(2, WORKFLOWS[customer] // 50))
                elif point == "mid-upsert":
                    pid = kill_mid_upsert(pull, customer, worker, edited)
                else:
                    pid = kill_at_random(pull, customer, worker, rng.uniform(0, 1.0))
                code = worker.ended(pid)
                pull.zuora.after_page = None
                if code == -signal.SIGKILL:
                    kills += 1
                    per_kill.append(pull.duplicates() - duplicates_before)
                assert pull.misplaced() == [], f"a row under the wrong customer after a kill {point}"
        finally:
            worker.close()

        for customer in sorted(WORKFLOWS):
            assert pull.run(customer).success

        ledger.duplicates_per_kill.extend(per_kill)
        settle(pull, ledger, capfd, {"worker stderr": worker.log.read_text()})
        assert kills >= ROUNDS - 2, f"only {kills} of {ROUNDS} runs were killed mid-run"
        for customer, tenant in pull.tenants.items():
            held = {workflow["id"]: workflow for workflow in pull.zuora.workflows(tenant)}
            rows = pull.rows(customer)
            live = {row["zuora_id"]: (row["name"], row["updated_at"]) for row in rows if row["deleted_at"] is None}
            assert live == {n: (workflow["name"], zuora_time(workflow["updatedAt"])) for n, workflow in held.items()}
            assert pull.marked_deleted(customer) == {row["zuora_id"] for row in rows} - set(held)
