"""Every way the API can misbehave on one call: the run still delivers every record exactly once."""

from __future__ import annotations

import email.utils
import time

import pytest

from sync_pipeline.demo.receiver import Fault, ReceivingApi
from sync_pipeline_tests.fault.conftest import FaultLedger, fault_settings, seed_users, sync_users, tracked_users

ROWS = 2500
BATCH = 500

SCENARIOS = {
    "500 then ok": {2: Fault(500)},
    "502 and 503 then ok": {2: Fault(502), 3: Fault(503)},
    "429 with Retry-After seconds": {2: Fault(429, {"Retry-After": "1"})},
    "429 with Retry-After HTTP-date": {2: Fault(429, {"Retry-After": "<date in 1s>"})},
    "408 then ok": {3: Fault(408)},
    "hang past the timeout": {2: Fault(action="hang", seconds=2.5)},
    "connection reset": {2: Fault(action="reset")},
    "slow body within the timeout": {2: Fault(action="slow_body", seconds=0.5)},
}


@pytest.mark.parametrize("faults", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_a_misbehaving_call_is_retried_and_every_record_arrives_exactly_once(
    faults: dict[int, Fault], receiver: ReceivingApi, pg_urls: dict[str, str], ledger: FaultLedger
) -> None:
    http_date = email.utils.formatdate(time.time() + 1, usegmt=True)
    receiver.fail_calls(
        "users",
        {
            n: Fault(
                f.status, {k: v.replace("<date in 1s>", http_date) for k, v in f.headers.items()}, f.action, f.seconds
            )
            for n, f in faults.items()
        },
    )
    settings = fault_settings(receiver, batch_size=BATCH)
    seed_users(pg_urls, ROWS, settings)

    report = sync_users(pg_urls, settings)

    ledger.records_lost += ROWS - receiver.log.received("users")
    assert report.succeeded, report.stopped_because or report.first_batch_error
    assert receiver.log.received("users") == ROWS
    assert len(tracked_users(pg_urls["log_db"])) == ROWS
    faulty_calls = [n for n in faults if faults[n].action != "slow_body"]
    assert report.retries == len(faulty_calls)
    if faulty_calls:  # the retried call carried the same Idempotency-Key as the failed one
        first = min(faulty_calls)
        keys = receiver.log.idempotency_keys["users"]
        assert keys[first - 1] == keys[first]


def test_an_answer_trickling_past_the_call_deadline_is_cut_and_retried_well_within_the_lease(
    receiver: ReceivingApi, pg_urls: dict[str, str], ledger: FaultLedger
) -> None:
    """Every byte comes within the 1 s read timeout, but the whole answer would take 8 s: past the 5 s lease."""
    receiver.fail_calls("users", {2: Fault(action="slow_body", seconds=8.0)})
    settings = fault_settings(receiver, batch_size=BATCH)
    seed_users(pg_urls, ROWS, settings)

    report = sync_users(pg_urls, settings)

    ledger.records_lost += ROWS - receiver.log.received("users")
    assert report.succeeded, report.stopped_because or report.first_batch_error
    assert report.retries == 1
    assert receiver.log.received("users") == ROWS
    keys = receiver.log.idempotency_keys["users"]
    assert keys[1] == keys[2], "the cut call was retried with the same Idempotency-Key"
    assert settings.api.deadline_seconds < settings.locking.lease_seconds
