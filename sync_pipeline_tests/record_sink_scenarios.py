"""The per-record sink against the real receiver: what each test builds, and the scenario every Log database runs."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from sync_pipeline.demo.receiver import Fault, ReceivingApi
from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.http.api import RecordRequester
from sync_pipeline.engine.http.retry import RetryPolicy
from sync_pipeline.engine.sinks.http_records import RecordChange, RecordSender
from sync_pipeline.engine.state.row_hashes import row_hash
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.engine.tables import rejected_table, scheduler_log_table
from sync_pipeline.resources.api_client import HttpSyncApiClient

from .row_hash_scenarios import stored_rows

API_KEY = "sk-records-3b9f1e-DO-NOT-LOG"
WORK_ORDERS = "praxedo/WorkOrder"
COLLECTION = "work-orders"
SCHEDULER_LOG_COLUMNS = {
    "ApplicationName": "sync_pipeline tests",
    "LogID": "SYNC",
    "LogCategory": "Sync",
    "ApplicationModule": "records",
    "IPHostName": "127.0.0.1",
    "CreatedBy": "tests",
}
FAST_RETRIES = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)

SenderFactory = Callable[..., RecordSender]


def order_id(number: int) -> str:
    """The EntityId of work order `number`: the same in every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"work-orders/{number}"))


def work_order(number: int, **edits: Any) -> dict[str, Any]:
    """Work order `number` as the mapping makes it, with `edits` applied."""
    return {"orderId": order_id(number), "title": f"Replace pump {number}", "hours": 1.5, **edits}


def change(number: int, external_id: str | None = None, **edits: Any) -> RecordChange:
    """Work order `number` to send: new without an external id, changed with one."""
    record = work_order(number, **edits)
    return RecordChange(order_id(number), record, row_hash(record), external_id)


def real_client() -> HttpSyncApiClient:
    """The real client, with the key the receiver expects in its default header."""
    return HttpSyncApiClient(api_key=API_KEY, timeout_seconds=5.0)


def record_sender(
    log_db: sa.Engine, endpoint_url: str, api: RecordRequester, waits: list[float] | None = None, **options: Any
) -> RecordSender:
    """A sender of work orders to `endpoint_url`, keeping its state in `log_db`, never really sleeping."""
    writer = SchedulerLogWriter(SCHEDULER_LOG_COLUMNS, run_id="records-test-run")
    return RecordSender(
        WORK_ORDERS,
        endpoint_url,
        api,
        log_db,
        writer,
        TrackingStore(log_db, writer),
        FAST_RETRIES,
        logging.getLogger("sync_test.records"),
        sleep=(waits if waits is not None else []).append,
        **options,
    )


def logged_calls(log_db: sa.Engine) -> list[tuple[str, str, int | None, int]]:
    """(Status, EndpointUrl, HttpResponseCode, Attempt) of every SchedulerLog row, oldest first."""
    with log_db.connect() as conn:
        query = sa.select(scheduler_log_table.c.Status, scheduler_log_table.c.AdditionalInformation)
        rows = conn.execute(query.order_by(scheduler_log_table.c.CreatedOn)).all()
    details = [(status, json.loads(info)) for status, info in rows]
    return [(status, d["EndpointUrl"], d["HttpResponseCode"], d["Attempt"]) for status, d in details]


def rejected(log_db: sa.Engine) -> list[tuple[str, int | None, str | None]]:
    """(EntityId, HttpResponseCode, ResponseExcerpt) of every TB_R_SYNC_REJECTED row."""
    columns = [rejected_table.c.EntityId, rejected_table.c.HttpResponseCode, rejected_table.c.ResponseExcerpt]
    with log_db.connect() as conn:
        return [(a, b, c) for a, b, c in conn.execute(sa.select(*columns).order_by(rejected_table.c.Id))]


def created_updated_and_refused_work_orders(log_db: sa.Engine, receiver: ReceivingApi) -> None:
    """Three work orders created, then two of them changed: one updated at its id, one refused with 422."""
    url = receiver.records_url(COLLECTION)
    sender = record_sender(log_db, url, real_client())

    sender.send([change(0), change(1), change(2)])
    ids = {entity_id: external_id for _, entity_id, _, external_id in stored_rows(log_db)}
    receiver.fail_record_calls(COLLECTION, {5: Fault(422, body='{"error": "hours must be at most 8"}')})
    sender.send([change(0, ids[order_id(0)], title="Replace pump 0 and valve"), change(1, ids[order_id(1)], hours=9)])

    assert receiver.collections.methods(COLLECTION) == [
        ("POST", "", 201),
        ("POST", "", 201),
        ("POST", "", 201),
        ("PUT", ids[order_id(0)], 200),
        ("PUT", ids[order_id(1)], 422),
    ]
    assert sorted(ids.values()) == sorted(receiver.collections.stored(COLLECTION)) == ["1001", "1002", "1003"]
    assert receiver.collections.stored(COLLECTION)[ids[order_id(0)]] == work_order(0, title="Replace pump 0 and valve")
    assert stored_rows(log_db) == sorted(
        [
            (WORK_ORDERS, order_id(0), row_hash(work_order(0, title="Replace pump 0 and valve")), ids[order_id(0)]),
            (WORK_ORDERS, order_id(1), row_hash(work_order(1)), ids[order_id(1)]),  # as last acknowledged
            (WORK_ORDERS, order_id(2), row_hash(work_order(2)), ids[order_id(2)]),
        ]
    )
    assert rejected(log_db) == [(order_id(1), 422, '{"error": "hours must be at most 8"}')]
    assert [(status, code) for status, _, code, _ in logged_calls(log_db)] == [
        ("Success", 201),
        ("Success", 201),
        ("Success", 201),
        ("Success", 200),
        ("Failure", 422),
    ]
    counts = sender.counts
    assert (counts.sent, counts.created, counts.updated, counts.rejected, counts.failed) == (4, 3, 1, 1, 0)
