"""The per-record sink: new records POSTed once each, changed ones PUT or PATCHed at their external id,
every attempt logged, the receiver's id kept with the hash in one transaction, and one bad record never
blocking the others."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.receiver import Fault, ReceivingApi
from sync_pipeline.engine.sinks.http_batch import EndpointUnreachable
from sync_pipeline.engine.sinks.http_records import RecordSender
from sync_pipeline.engine.state.row_hashes import row_hash
from sync_pipeline.engine.state.tracking import DeliveredButUntracked
from sync_pipeline.engine.tables import ROW_HASH_TABLE_NAME, rejected_table, scheduler_log_table

from .conftest import SyncDatabases
from .fakes import RecordingApiClient
from .record_sink_scenarios import (
    API_KEY,
    COLLECTION,
    WORK_ORDERS,
    change,
    created_updated_and_refused_work_orders,
    logged_calls,
    order_id,
    real_client,
    record_sender,
    rejected,
    work_order,
)
from .row_hash_scenarios import stored_rows
from .scripted_api import Answer, ScriptedApi
from .test_http_client import closed_port


@pytest.fixture
def receiver() -> Iterator[ReceivingApi]:
    """The receiving API on a free port of 127.0.0.1, with its REST collections."""
    with ReceivingApi(API_KEY) as api:
        yield api


@pytest.fixture
def log_db(databases: SyncDatabases) -> sa.Engine:
    """The test's SQLite Log database, every Log table created."""
    return databases.log


def test_new_records_are_posted_once_each_and_their_external_ids_kept_with_their_hashes(
    log_db: sa.Engine, receiver: ReceivingApi
) -> None:
    url = receiver.records_url(COLLECTION)
    sender = record_sender(log_db, url, real_client())

    sender.send([change(0), change(1), change(2)])

    assert receiver.collections.methods(COLLECTION) == [("POST", "", 201)] * 3
    assert receiver.collections.stored(COLLECTION) == {
        "1001": work_order(0),
        "1002": work_order(1),
        "1003": work_order(2),
    }
    assert stored_rows(log_db) == sorted(
        (WORK_ORDERS, order_id(n), row_hash(work_order(n)), str(1001 + n)) for n in range(3)
    )
    assert logged_calls(log_db) == [("Success", url, 201, 1)] * 3
    keys = receiver.collections.idempotency_keys[COLLECTION]
    assert len(set(keys)) == 3 and all(keys), "each create carries its own Idempotency-Key"
    counts = sender.counts
    assert (counts.sent, counts.created, counts.updated, counts.api_calls, counts.batches_ok) == (3, 3, 0, 3, 1)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_changed_records_are_updated_at_their_external_id_with_the_chosen_method_and_keep_it(
    method: str, log_db: sa.Engine, receiver: ReceivingApi
) -> None:
    url = receiver.records_url(COLLECTION)
    sender = record_sender(log_db, url, real_client(), update_method=method)
    sender.send([change(0), change(1)])

    sender.send([change(0, "1001", title="Replace pump 0 and valve"), change(1, "1002", hours=2.0)])

    assert receiver.collections.methods(COLLECTION)[2:] == [(method, "1001", 200), (method, "1002", 200)]
    assert receiver.collections.stored(COLLECTION) == {
        "1001": work_order(0, title="Replace pump 0 and valve"),
        "1002": work_order(1, hours=2.0),
    }
    assert stored_rows(log_db) == sorted(
        [
            (WORK_ORDERS, order_id(0), row_hash(work_order(0, title="Replace pump 0 and valve")), "1001"),
            (WORK_ORDERS, order_id(1), row_hash(work_order(1, hours=2.0)), "1002"),
        ]
    )
    assert logged_calls(log_db)[2:] == [("Success", f"{url}/1001", 200, 1), ("Success", f"{url}/1002", 200, 1)]
    assert (sender.counts.created, sender.counts.updated, sender.counts.sent) == (2, 2, 4)


def test_an_external_id_is_one_path_segment_whatever_it_holds(log_db: sa.Engine) -> None:
    api = RecordingApiClient()
    url = "http://receiver.test/api/records/work-orders"
    sender = record_sender(log_db, url, api)

    sender.send([change(0, "WO 7/2024?x")])

    assert logged_calls(log_db) == [("Failure", f"{url}/WO%207%2F2024%3Fx", 404, 1)]
    assert [(r.method, r.status) for r in api.requests(f"{url}/WO%207%2F2024%3Fx")] == [("PUT", 404)]


def test_a_transient_503_is_retried_with_the_same_idempotency_key_and_each_attempt_logged(
    log_db: sa.Engine, receiver: ReceivingApi
) -> None:
    url = receiver.records_url(COLLECTION)
    receiver.fail_record_calls(COLLECTION, {1: 503})
    waits: list[float] = []
    sender = record_sender(log_db, url, real_client(), waits)

    sender.send([change(0)])

    assert receiver.collections.methods(COLLECTION) == [("POST", "", 503), ("POST", "", 201)]
    keys = receiver.collections.idempotency_keys[COLLECTION]
    assert keys[0] == keys[1] != ""
    assert len(waits) == 1
    assert logged_calls(log_db) == [("Failure", url, 503, 1), ("Success", url, 201, 2)]
    assert stored_rows(log_db) == [(WORK_ORDERS, order_id(0), row_hash(work_order(0)), "1001")]
    assert (sender.counts.sent, sender.counts.api_calls, sender.counts.retries) == (1, 2, 1)


def test_a_422_rejects_that_record_only_with_the_answer_and_the_others_go_on(
    log_db: sa.Engine, receiver: ReceivingApi
) -> None:
    url = receiver.records_url(COLLECTION)
    receiver.fail_record_calls(COLLECTION, {2: Fault(422, body='{"error": "title is required"}')})
    sender = record_sender(log_db, url, real_client())

    sender.send([change(0), change(1, title=""), change(2)])

    assert receiver.collections.methods(COLLECTION) == [("POST", "", 201), ("POST", "", 422), ("POST", "", 201)]
    assert rejected(log_db) == [(order_id(1), 422, '{"error": "title is required"}')]
    assert [entity_id for _, entity_id, _, _ in stored_rows(log_db)] == sorted([order_id(0), order_id(2)])
    assert [status for status, *_ in logged_calls(log_db)] == ["Success", "Failure", "Success"]
    counts = sender.counts
    assert (counts.sent, counts.rejected, counts.failed, counts.rejected_ids, counts.batches_failed) == (
        2,
        1,
        0,
        [order_id(1)],
        0,
    )


def test_a_2xx_create_without_the_id_field_fails_that_record_naming_the_field_and_keeps_nothing_for_it(
    log_db: sa.Engine, receiver: ReceivingApi, caplog: pytest.LogCaptureFixture
) -> None:
    url = receiver.records_url(COLLECTION)
    receiver.fail_record_calls(
        COLLECTION, {1: Fault(201, body='{"created": true}'), 2: Fault(201, body='{"data": {"id": "WO-2"}}')}
    )
    sender = record_sender(log_db, url, real_client(), id_field="data.id")

    with caplog.at_level(logging.ERROR, "sync_test.records"):
        sender.send([change(0), change(1)])

    assert stored_rows(log_db) == [(WORK_ORDERS, order_id(1), row_hash(work_order(1)), "WO-2")]
    assert logged_calls(log_db) == [("Failure", url, 201, 1), ("Success", url, 201, 1)]
    assert sender.counts.first_error is not None and "no id at 'data.id'" in sender.counts.first_error
    assert f"record {order_id(0)} failed after 1 attempt(s)" in caplog.text and "'data.id'" in caplog.text
    assert (sender.counts.sent, sender.counts.failed, sender.counts.batches_failed) == (1, 1, 1)
    assert sender.counts.rejected == 0, "not a refusal of its content: created again next run"
    assert rejected(log_db) == [], "queued when the run settles, not before"
    sender.queue_failures()
    assert rejected(log_db) == [(order_id(0), 201, None)], "one failed run counted in the retry queue"


def test_the_external_id_is_read_at_a_dotted_path_of_the_answer(log_db: sa.Engine) -> None:
    with ScriptedApi(Answer(201, body='{"data": {"workOrder": {"code": 4711}}}')) as api:
        sender = record_sender(log_db, api.url("/orders"), real_client(), id_field="data.workOrder.code")
        sender.send([change(0)])

    assert stored_rows(log_db) == [(WORK_ORDERS, order_id(0), row_hash(work_order(0)), "4711")]
    assert [(request.method, request.path) for request in api.requests] == [("POST", "/orders")]


@pytest.mark.parametrize(
    ("fault", "external_id", "error"),
    [
        pytest.param(404, "9999", "HTTP 404", id="update of an id the receiver does not know"),
        pytest.param(409, None, "HTTP 409 Conflict to create: the receiver may hold this record already", id="409"),
        pytest.param(403, None, "HTTP 403", id="forbidden"),
    ],
)
def test_any_other_refusal_fails_the_record_its_hash_untouched_not_retried_and_the_others_go_on(
    fault: int, external_id: str | None, error: str, log_db: sa.Engine, receiver: ReceivingApi
) -> None:
    url = receiver.records_url(COLLECTION)
    sender = record_sender(log_db, url, real_client())
    receiver.fail_record_calls(COLLECTION, {1: fault})

    sender.send([change(0, external_id), change(1)])

    assert [entity_id for _, entity_id, _, _ in stored_rows(log_db)] == [order_id(1)]
    assert [status for _, _, status in receiver.collections.methods(COLLECTION)] == [fault, 201]
    assert sender.counts.first_error is not None and sender.counts.first_error.startswith(error)
    assert (sender.counts.failed, sender.counts.sent, sender.counts.retries, sender.counts.rejected) == (1, 1, 0, 0)
    sender.queue_failures()
    assert rejected(log_db) == [(order_id(0), fault, None)], "one failed run counted in the retry queue"


def test_an_unreachable_endpoint_stops_with_endpoint_unreachable_after_its_attempts(log_db: sa.Engine) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/records/{COLLECTION}"
    sender = record_sender(log_db, url, real_client())

    with pytest.raises(EndpointUnreachable, match="endpoint unreachable"):
        sender.send([change(0), change(1), change(2)])

    assert logged_calls(log_db) == [("Failure", url, None, 1), ("Failure", url, None, 2), ("Failure", url, None, 3)]
    assert stored_rows(log_db) == []
    assert (sender.counts.failed, sender.counts.api_calls, sender.counts.batches_failed) == (3, 3, 1)


@pytest.mark.parametrize("missing", ["SchedulerLog", ROW_HASH_TABLE_NAME])
def test_a_success_keeps_its_hash_row_and_its_schedulerlog_row_together_or_neither(
    missing: str, log_db: sa.Engine, receiver: ReceivingApi
) -> None:
    with log_db.begin() as conn:
        conn.execute(sa.text(f'DROP TABLE "{missing}"'))
    sender = record_sender(log_db, receiver.records_url(COLLECTION), real_client())

    with pytest.raises(DeliveredButUntracked, match=f"record {order_id(0)} was acknowledged"):
        sender.send([change(0)])

    assert receiver.collections.stored(COLLECTION) == {"1001": work_order(0)}
    other = {"SchedulerLog": ROW_HASH_TABLE_NAME, ROW_HASH_TABLE_NAME: "SchedulerLog"}[missing]
    with log_db.connect() as conn:
        assert conn.execute(sa.text(f'SELECT COUNT(*) FROM "{other}"')).scalar_one() == 0


def test_no_secret_reaches_the_logs_schedulerlog_or_the_rejected_records(
    log_db: sa.Engine, receiver: ReceivingApi, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.fail_record_calls(
        COLLECTION,
        {1: Fault(503, echo_headers=True), 3: Fault(422, echo_headers=True), 4: Fault(201, echo_headers=True)},
    )
    sender = record_sender(log_db, receiver.records_url(COLLECTION), real_client())

    with caplog.at_level(logging.DEBUG):
        sender.send([change(0), change(1), change(2)])
        sender.queue_failures()

    with log_db.connect() as conn:
        kept = [*conn.execute(sa.select(scheduler_log_table)).all(), *conn.execute(sa.select(rejected_table)).all()]
    assert len(kept) == 6 and [row[0] for row in rejected(log_db)] == [order_id(1), order_id(2)]  # refused, failed
    assert "[redacted]" in json.dumps([list(map(str, row)) for row in kept])
    assert API_KEY not in caplog.text
    assert all(API_KEY not in str(value) for row in kept for value in row)
    assert API_KEY not in str(sender.counts)


def test_the_update_method_and_the_id_field_are_checked_when_the_sender_is_made(log_db: sa.Engine) -> None:
    with pytest.raises(ValueError, match=r"^update_method: 'POST' is not allowed \(PUT or PATCH\)$"):
        record_sender(log_db, "http://receiver.test/orders", RecordingApiClient(), update_method="POST")
    with pytest.raises(ValueError, match=r"^id_field: 'data\.\.id' is not a field name or a dotted path"):
        record_sender(log_db, "http://receiver.test/orders", RecordingApiClient(), id_field="data..id")


def test_the_same_sync_on_the_fake_client_goes_as_on_the_real_receiver(log_db: sa.Engine) -> None:
    api = RecordingApiClient()
    url = "http://receiver.test/api/records/work-orders"
    sender: RecordSender = record_sender(log_db, url, api)

    sender.send([change(0), change(1)])
    sender.send([change(0, "1", hours=3.0), change(1, "77")])

    assert [(r.method, r.url, r.status) for r in api.requests(url)] == [("POST", url, 201), ("POST", url, 201)]
    assert [(r.method, r.status) for r in [*api.requests(f"{url}/1"), *api.requests(f"{url}/77")]] == [
        ("PUT", 200),
        ("PUT", 404),
    ]
    assert api.collection(url) == {"1": work_order(0, hours=3.0), "2": work_order(1)}
    assert stored_rows(log_db) == sorted(
        [
            (WORK_ORDERS, order_id(0), row_hash(work_order(0, hours=3.0)), "1"),
            (WORK_ORDERS, order_id(1), row_hash(work_order(1)), "2"),
        ]
    )


def test_created_updated_and_refused_work_orders_on_sqlite(log_db: sa.Engine, receiver: ReceivingApi) -> None:
    created_updated_and_refused_work_orders(log_db, receiver)
