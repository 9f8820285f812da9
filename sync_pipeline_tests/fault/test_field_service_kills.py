"""SIGKILL the CHR -> Praxedo syncs between Praxedo's answer and the row hash write, many times; then a clean
run: every CHR record in Praxedo with its content, none created twice, none left without its state.

Praxedo takes the record's id from us, so a run killed after Praxedo created a record but before the run
kept its row hash leaves a record Praxedo holds and we do not know of: the next run's create is answered
"id already used", and must update it (adopt it), never make a second one. The kill lands there exactly:
the local Praxedo kills the worker after storing a create and before answering it. Other rounds kill it a
random moment after a create was answered (in the row hash and SchedulerLog write, or past it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.field_service_seed import (
    PRAXEDO_USER,
    SYNC,
    ChrData,
    chr_rows,
    field_service_settings,
    seed_chr,
)
from sync_pipeline.demo.praxedo import PraxedoSimulator
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.tables import row_hash_table
from sync_pipeline.orchestration.component import declared_spec
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.fault.conftest import FaultLedger
from sync_pipeline_tests.field_service import PASSWORD
from sync_pipeline_tests.real_db.conftest import fresh_databases

ROUNDS = 12
DATA = ChrData(accounts=25, contacts=2, work_orders=2)
"""25 accounts, 50 contacts, 50 work orders: 125 creates a clean run makes."""
MANAGER_OF = {"Accounts": "CustomerManager", "Contacts": "ContactManager", "WorkOrders": "BusinessEventManager"}
KEY_OF = {"Accounts": "AccountId", "Contacts": "ContactId", "WorkOrders": "WorkOrderId"}
REPO_ROOT = Path(__file__).resolve().parents[2]


class KillingPraxedo(PraxedoSimulator):
    """The local Praxedo that SIGKILLs the worker once it has stored its `kill_at`-th create, before answering."""

    def __init__(self) -> None:
        super().__init__(PRAXEDO_USER, PASSWORD)
        self.worker_pid: int | None = None
        self.kill_at: int | None = None
        self.created = 0

    def answer(self, path: str, authorization: str, body: bytes) -> tuple[int, dict[str, Any]]:
        status, payload = super().answer(path, authorization, body)
        stored = [e for e in payload.get("entities", []) if e.get("resultCode") == 0]
        self.created += len(stored)
        if stored and self.kill_at is not None and self.created >= self.kill_at and self.worker_pid is not None:
            os.kill(self.worker_pid, signal.SIGKILL)  # Praxedo holds it; the worker never hears so
            self.kill_at = None
        return status, payload


@pytest.fixture
def urls() -> Iterator[dict[str, str]]:
    with fresh_databases("postgresql", ("chr_db", "log_db")) as made:
        yield made


def test_kills_between_praxedos_answer_and_the_state_write_lose_nothing_and_create_nothing_twice(
    urls: dict[str, str], ledger: FaultLedger
) -> None:
    env = {**os.environ, "CHR_DB_URL": urls["chr_db"], "SYNC_LOG_DB_URL": urls["log_db"], "PRAXEDO_PASSWORD": PASSWORD}
    log = create_sync_engine(urls["log_db"])
    create_log_tables(log)
    chr_db = create_sync_engine(urls["chr_db"])
    rng = random.Random(20261201)
    kills = 0
    with KillingPraxedo() as praxedo:
        changes = {
            "api": {"timeout_seconds": 1},
            "retries": {"max_attempts": 2, "initial_delay_seconds": 0.01, "max_delay_seconds": 0.05},
            "locking": {"lease_seconds": 1.5, "wait_seconds": 5},  # a killed run's lock lapses soon
        }
        settings = field_service_settings(praxedo.base_url, changes)
        seed_chr(chr_db, declared_spec(SYNC), settings, DATA)
        for round_number in range(ROUNDS):
            worker = subprocess.Popen(
                [sys.executable, "-m", "sync_pipeline_tests.fault.field_service_worker", json.dumps(settings)],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            praxedo.worker_pid = worker.pid
            if round_number % 3 == 2:  # a random moment after an answer: the state write, or past it
                time.sleep(rng.uniform(0.05, 0.6))
                if worker.poll() is None:
                    worker.send_signal(signal.SIGKILL)
            else:
                praxedo.kill_at = praxedo.created + rng.randint(1, 6)
            worker.wait(timeout=120)
            praxedo.kill_at = None
            kills += worker.returncode == -signal.SIGKILL

        final = subprocess.run(
            [sys.executable, "-m", "sync_pipeline_tests.fault.field_service_worker", json.dumps(settings)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert final.returncode == 0, final.stderr[-2000:]

        expected = chr_rows(DATA)
        lost = copies = 0
        for entity, manager in MANAGER_OF.items():
            held = praxedo.held(manager)
            ids = {str(row[KEY_OF[entity]]) for row in expected[entity]}
            lost += len(ids - set(held))
            copies += len(set(held) - ids)  # a record created again under another id
        customers = praxedo.held("CustomerManager")
        assert all(customers[row["AccountId"]]["name"] == row["Name"] for row in expected["Accounts"])
        adopted = [r for r in praxedo.results() if r.result_code == 12]
    with log.connect() as conn:
        kept = conn.execute(sa.select(sa.func.count()).select_from(row_hash_table)).scalar_one()
    log.dispose()
    chr_db.dispose()

    ledger.records_lost += lost
    ledger.duplicate_creates += copies
    assert kills >= ROUNDS - 3, f"only {kills} of {ROUNDS} workers were killed mid-run"
    assert lost == 0 and copies == 0
    assert kept == sum(len(rows) for rows in expected.values())  # every record's state kept at last
    assert adopted, "no kill landed between a create and its state write: the scenario did not test adoption"
