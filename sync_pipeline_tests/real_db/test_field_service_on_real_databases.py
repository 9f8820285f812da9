"""The packaged CHR -> Praxedo field-service syncs (defs/field_service) against the local Praxedo, CHR read
from its database: create, update, adoption of what Praxedo holds already, records held back until their
account is in Praxedo, refusals and faults, the retry queue (a record failing every run is counted, alerted on and
dead-lettered; a confirmed resend re-queues it), on SQLite, PostgreSQL and MariaDB.

Each test runs the real job on an ephemeral instance; CHR's and the Log database are two new databases of
one server (two files for SQLite).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync_pipeline.cli import main
from sync_pipeline.demo.field_service_seed import PRAXEDO_USER, ChrData, account_id
from sync_pipeline.demo.praxedo import OperationResult
from sync_pipeline.engine.tables import cursor_table, rejected_table, scheduler_log_table
from sync_pipeline.orchestration.alerts import failing_record_alerts
from sync_pipeline_tests.field_service import PASSWORD, FieldService, field_service
from sync_pipeline_tests.real_db.conftest import SERVERS, fresh_databases, table_rows

DATA = ChrData(accounts=6, contacts=2, work_orders=3, dangling_contacts=1)
"""6 accounts, 13 contacts (one of an account CHR does not have yet), 18 work orders."""


@pytest.fixture(params=["sqlite", *sorted(SERVERS)])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """CHR's and the Log database: two SQLite files, or two new databases of one server."""
    if request.param == "sqlite":
        yield {name: f"sqlite:///{tmp_path / name}.db" for name in ("chr", "log")}
        return
    with fresh_databases(request.param, ("chr_db", "log_db")) as made:
        yield {"chr": made["chr_db"], "log": made["log_db"]}


@pytest.fixture
def sync(
    request: pytest.FixtureRequest, urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FieldService]:
    """The packaged syncs on the server under test; a test marked `settings(...)` lays those over them."""
    marker = request.node.get_closest_marker("settings")
    with field_service(urls, monkeypatch, DATA, marker.args[0] if marker else None) as started:
        yield started


def _codes(results: list[OperationResult]) -> list[tuple[str, int]]:
    return [(result.operation, result.result_code) for result in results]


def test_every_record_is_created_under_its_chr_id_and_a_second_run_sends_nothing(sync: FieldService) -> None:
    first = sync.run()

    assert first.success
    figures = sync.figures(first)
    assert [figures[e]["created"] for e in ("accounts", "contacts", "work_orders")] == [6, 12, 18]
    customers = sync.praxedo.held("CustomerManager")
    assert sorted(customers) == [account_id(n) for n in range(1, 7)]
    assert customers[account_id(2)]["address"] == {
        "street": "2 rue de la Gare",
        "zipCode": "9000",
        "city": "Gent",
        "country": "BE",
    }
    events = sync.praxedo.held("BusinessEventManager")
    assert events["WO-00001-2"]["customerId"] == account_id(1) and events["WO-00001-2"]["priority"] == "LOW"
    assert events["WO-00001-2"]["requestedDate"] == "2026-12-03T08:00:00"
    answered = len(sync.praxedo.results())

    second = sync.run()

    assert second.success
    assert len(sync.praxedo.results()) == answered  # nothing changed in CHR: no call at all
    assert [sync.figures(second)[e]["unchanged"] for e in ("accounts", "contacts", "work_orders")] == [6, 12, 18]


def test_one_edited_account_sends_exactly_one_update(sync: FieldService) -> None:
    sync.run()
    answered = len(sync.praxedo.results())
    sync.edit("CHR_ACCOUNT", "AccountId", account_id(3), Phone="+33 4 72 99 99 99")

    result = sync.run()

    new = sync.praxedo.results()[answered:]
    assert [(r.operation, r.record_id, r.result_code) for r in new] == [("updateCustomer", account_id(3), 0)]
    assert sync.praxedo.held("CustomerManager")[account_id(3)]["phone"] == "+33 4 72 99 99 99"
    assert sync.figures(result)["accounts"]["updated"] == 1


def test_a_record_praxedo_holds_without_our_state_is_updated_never_created_twice(sync: FieldService) -> None:
    sync.praxedo.put("CustomerManager", {"id": account_id(4), "name": "typed in by hand"})

    result = sync.run()

    assert result.success
    mine = [r for r in sync.praxedo.results("CustomerManager") if r.record_id == account_id(4)]
    assert _codes(mine) == [("createCustomers", 12), ("updateCustomer", 0)]  # id taken: adopted and updated
    assert sync.praxedo.held("CustomerManager")[account_id(4)]["name"] == "Customer 4 SARL"
    accounts = sync.figures(result)["accounts"]
    assert (accounts["created"], accounts["adopted"], accounts["updated"]) == (5, 1, 1)
    assert len(sync.praxedo.held("CustomerManager")) == 6  # one copy each

    again = sync.run()
    assert sync.figures(again)["accounts"]["unchanged"] == 6  # adopted: its row hash kept, nothing sent again

    sync.edit("CHR_ACCOUNT", "AccountId", account_id(4), Name="Customer 4 SAS")  # later edited in CHR
    edited = sync.run()

    assert sync.figures(edited)["accounts"]["updated"] == 1  # updated at the id it was adopted under
    assert sync.praxedo.held("CustomerManager")[account_id(4)]["name"] == "Customer 4 SAS"
    rows = table_rows(sync.log, scheduler_log_table)
    assert [row for row in rows if row["Status"] == "Failure"] == []  # the 409 found the record: no failure
    conflicts = [row for row in rows if json.loads(row["AdditionalInformation"])["HttpResponseCode"] == 409]
    assert len(conflicts) == 1  # one row per call still: the 409, then the update beside it


def test_a_contact_whose_account_is_not_in_praxedo_is_held_back_with_no_call_then_sent(sync: FieldService) -> None:
    late_account = account_id(DATA.accounts + 1)

    first = sync.run()

    contacts = sync.figures(first)["contacts"]
    assert (contacts["held_back"], contacts["created"]) == (1, 12)
    assert "CON-LATE-1" not in sync.praxedo.held("ContactManager")
    assert all(r.result_code != 31 for r in sync.praxedo.results())  # never sent with a dangling reference

    chr_accounts = sa.Table("CHR_ACCOUNT", sa.MetaData(), autoload_with=sync.chr)
    with sync.chr.begin() as conn:  # the account is entered in CHR later
        conn.execute(sa.insert(chr_accounts).values(AccountId=late_account, Name="Late SARL"))

    second = sync.run()

    assert sync.figures(second)["accounts"]["created"] == 1
    assert (sync.figures(second)["contacts"]["held_back"], sync.figures(second)["contacts"]["created"]) == (0, 1)
    assert sync.praxedo.held("ContactManager")["CON-LATE-1"]["customerId"] == late_account


def test_an_account_praxedo_refuses_is_kept_with_its_reason_and_holds_back_its_contacts_and_orders(
    sync: FieldService,
) -> None:
    refused = account_id(5)
    sync.praxedo.refuse("CustomerManager", [refused], "phone: not a valid phone number")

    result = sync.run()

    figures = sync.figures(result)
    assert sorted(figures) == [
        "accounts",
        "completed_work_orders",
        "contacts",
        "work_orders",
    ]  # one refusal never blocks the others
    assert not result.success  # ... and the run says it is incomplete, so it alerts
    assert (figures["accounts"]["created"], figures["accounts"]["rejected"]) == (5, 1)
    assert (figures["contacts"]["held_back"], figures["work_orders"]["held_back"]) == (3, 3)
    (rejection,) = [row for row in table_rows(sync.log, rejected_table) if row["EntityId"] == refused]
    assert rejection["EntityType"] == "field_service.Accounts"
    assert "phone: not a valid phone number" in rejection["ResponseExcerpt"]
    assert all(r.result_code != 31 for r in sync.praxedo.results())


def test_a_burst_of_faults_is_retried_and_a_changed_password_stops_the_entity_without_showing_it(
    sync: FieldService,
) -> None:
    sync.praxedo.fail_next_calls(503, 500)  # one account's create: two faults, then two attempts each...

    result = sync.run()

    accounts = sync.figures(result)["accounts"]
    assert accounts["created"] == 5 and accounts["failed"] == 1 and accounts["retries"] >= 1
    assert accounts["created"] + accounts["failed"] == 6

    sync.praxedo.change_password("rotated-by-the-praxedo-admin")
    sync.praxedo.fail_next_calls(500, echo_credentials=True)  # a fault quoting our Basic header back, then 401s
    stopped = sync.run()

    assert sync.praxedo.unauthorized >= 1
    assert sync.figures(stopped)["accounts"]["created"] == 0
    basic = base64.b64encode(f"{PRAXEDO_USER}:{PASSWORD}".encode()).decode()
    logged = " ".join(
        f"{row['AdditionalInformation']} {row['ExceptionMessage']}" for row in table_rows(sync.log, scheduler_log_table)
    )
    assert "HTTP 401" in logged and "service unavailable" in logged
    assert PASSWORD not in logged and basic not in logged


def _chr_work_orders(sync: FieldService) -> dict[str, dict[str, Any]]:
    table = sa.Table("CHR_WORK_ORDER", sa.MetaData(), autoload_with=sync.chr)
    return {row["WorkOrderId"]: row for row in table_rows(sync.chr, table)}


def test_completed_work_orders_move_chr_forward_a_cancellation_included_and_an_unknown_one_is_queued(
    sync: FieldService,
) -> None:
    assert sync.run().success  # every work order is in Praxedo, NEW
    sync.edit("CHR_WORK_ORDER", "WorkOrderId", "WO-00002-1", Status="Closed")  # CHR is further on already
    done = dt.datetime(2026, 12, 1, 16, 30, tzinfo=dt.UTC)
    sync.praxedo.complete(["WO-00001-1", "WO-00002-1"], "COMPLETED", done)
    sync.praxedo.complete(["WO-00001-2"], "VALIDATED", done)
    sync.praxedo.complete(["WO-00001-3"], "COMPLETED", None)  # no completion date: cancelled
    sync.praxedo.put("BusinessEventManager", {"id": "WO-BY-HAND", "status": "COMPLETED", "completionDate": None})
    sync.praxedo.complete(["WO-BY-HAND"], "COMPLETED", done)  # made in Praxedo, unknown to CHR

    second = sync.run()

    completed = sync.figures(second)["completed_work_orders"]
    assert (completed["rows_found"], completed["updated"], completed["rejected"]) == (5, 3, 1)
    orders = _chr_work_orders(sync)
    assert {wo: orders[wo]["Status"] for wo in ("WO-00001-1", "WO-00001-2", "WO-00001-3", "WO-00002-1")} == {
        "WO-00001-1": "Completed",
        "WO-00001-2": "Validated",
        "WO-00001-3": "Cancelled",
        "WO-00002-1": "Closed",  # never moved back
    }
    assert orders["WO-00001-1"]["CompletedOn"] == done.replace(tzinfo=None)
    assert orders["WO-00002-1"]["CompletedOn"] is None and orders["WO-00003-1"]["Status"] == "Open"
    assert orders["WO-00001-1"]["Title"] == "Boiler maintenance 1", "only the status columns are written"
    (queued,) = [row for row in table_rows(sync.log, rejected_table) if row["EntityId"] == "WO-BY-HAND"]
    assert queued["EntityType"] == "field_service.CompletedWorkOrders"
    assert "no row of CHR_WORK_ORDER has key" in queued["Reason"]

    third = sync.run()  # everything is re-read inside the lookback: nothing written twice

    again = sync.figures(third)["completed_work_orders"]
    assert (again["rows_found"], again["updated"]) == (5, 0)
    assert _chr_work_orders(sync) == orders


def test_a_completion_committed_late_is_read_inside_the_lookback_and_not_before_it(sync: FieldService) -> None:
    sync.run()
    sync.praxedo.complete(["WO-00001-1"], "COMPLETED", dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC))
    sync.run()  # the mark is now WO-00001-1's modification
    (mark,) = [
        row["CursorValue"]
        for row in table_rows(sync.log, cursor_table)
        if row["EntityType"] == "field_service.CompletedWorkOrders"
    ]
    late = dt.datetime.fromisoformat(mark)
    sync.praxedo.complete(["WO-00002-1"], "COMPLETED", late, modified_on=late - dt.timedelta(seconds=60))
    sync.praxedo.complete(["WO-00003-1"], "COMPLETED", late, modified_on=late - dt.timedelta(hours=1))

    sync.run()

    orders = _chr_work_orders(sync)
    assert orders["WO-00002-1"]["Status"] == "Completed", "committed 60 s before the mark, inside 300 s of lookback"
    assert orders["WO-00003-1"]["Status"] == "Open", "an hour before the mark: past the lookback"


def test_work_orders_are_read_from_their_modified_on_mark_so_an_unstamped_edit_is_not_read(sync: FieldService) -> None:
    sync.run()
    sync.edit("CHR_WORK_ORDER", "WorkOrderId", "WO-00001-1", Title="Pump", ModifiedOn=dt.datetime(2026, 12, 1, 10, 0))
    moved = sync.figures(sync.run())["work_orders"]  # the mark moves to 10:00
    sync.edit("CHR_WORK_ORDER", "WorkOrderId", "WO-00004-2", Title="Boiler replaced")  # ModifiedOn not moved

    quiet = sync.figures(sync.run())["work_orders"]
    sync.edit("CHR_WORK_ORDER", "WorkOrderId", "WO-00004-2", ModifiedOn=dt.datetime(2026, 12, 1, 12, 0))
    stamped = sync.figures(sync.run())["work_orders"]

    assert (moved["rows_found"], moved["updated"]) == (18, 1), "the first mark was every order's, all re-read"
    assert (quiet["rows_found"], quiet["sent"]) == (1, 0), "only WO-00001-1, at the mark: the edit is not seen"
    assert (stamped["rows_found"], stamped["updated"]) == (2, 1)
    assert sync.praxedo.held("BusinessEventManager")["WO-00004-2"]["title"] == "Boiler replaced"


NO_LOOKBACK = {"entities": {"WorkOrders": {"lookback_seconds": 0}, "CompletedWorkOrders": {"lookback_seconds": 0}}}
"""Without a lookback, a record behind the mark comes back only from the retry queue."""


def _queued(sync: FieldService, entity: str) -> list[str]:
    return sorted(row["EntityId"] for row in table_rows(sync.log, rejected_table) if row["EntityType"] == entity)


@pytest.mark.settings(NO_LOOKBACK)
def test_a_refused_work_order_is_retried_from_the_queue_once_the_mark_has_moved_past_it(sync: FieldService) -> None:
    sync.praxedo.refuse("BusinessEventManager", ["WO-00003-2"], "title: refused")
    sync.run()
    assert _queued(sync, "field_service.WorkOrders") == ["WO-00003-2"]
    sync.edit("CHR_WORK_ORDER", "WorkOrderId", "WO-00005-1", Title="Valve", ModifiedOn=dt.datetime(2026, 12, 1, 8))
    sync.run()  # the mark moves to 12-01 08:00, past WO-00003-2's ModifiedOn; the queue brings it back still
    sync.praxedo.stop_refusing("BusinessEventManager", ["WO-00003-2"])

    third = sync.figures(sync.run())["work_orders"]

    assert (third["rows_found"], third["created"]) == (2, 1), "WO-00003-2 from the queue, WO-00005-1 at the mark"
    assert "WO-00003-2" in sync.praxedo.held("BusinessEventManager")
    assert _queued(sync, "field_service.WorkOrders") == []


@pytest.mark.settings(NO_LOOKBACK)
def test_a_completed_work_order_unknown_to_chr_is_retried_from_the_queue_until_chr_has_it(sync: FieldService) -> None:
    sync.run()
    done = dt.datetime(2026, 12, 1, 16, 30, tzinfo=dt.UTC)
    sync.praxedo.put("BusinessEventManager", {"id": "WO-LATE", "status": "NEW"})
    sync.praxedo.complete(["WO-LATE"], "COMPLETED", done, modified_on=done)
    sync.run()
    assert _queued(sync, "field_service.CompletedWorkOrders") == ["WO-LATE"]
    sync.praxedo.complete(["WO-00001-1"], "COMPLETED", done)  # now: the mark moves far past WO-LATE's
    sync.run()
    chr_table = sa.Table("CHR_WORK_ORDER", sa.MetaData(), autoload_with=sync.chr)
    with sync.chr.begin() as conn:  # CHR catches up: the work order is there now
        conn.execute(
            sa.insert(chr_table).values(
                WorkOrderId="WO-LATE",
                AccountId=account_id(1),
                Title="Late",
                ModifiedOn=dt.datetime(2026, 12, 1),
                Status="Open",
            )
        )

    last = sync.figures(sync.run())["completed_work_orders"]

    assert (last["rows_found"], last["updated"], last["rejected"]) == (2, 1, 0), (
        "WO-LATE from the queue, one at the mark"
    )
    assert _chr_work_orders(sync)["WO-LATE"]["Status"] == "Completed"
    assert _queued(sync, "field_service.CompletedWorkOrders") == []


def queue_row(sync: FieldService, entity_id: str) -> dict[str, Any]:
    """The record's row in the retry queue (TB_R_SYNC_REJECTED)."""
    (row,) = [row for row in table_rows(sync.log, rejected_table) if row["EntityId"] == entity_id]
    return row


def calls_for(sync: FieldService, entity_id: str) -> int:
    """Praxedo's answers to calls about this record so far."""
    return sum(result.record_id == entity_id for result in sync.praxedo.results())


def test_a_record_refused_ten_runs_is_dead_lettered_and_costs_no_call_on_the_eleventh(sync: FieldService) -> None:
    refused = "CON-00002-1"
    sync.praxedo.refuse("ContactManager", [refused], "email: domain does not accept mail")

    for run in range(1, 10):
        contacts = sync.figures(sync.run())["contacts"]
        assert (contacts["dead"], contacts["queued_records"], contacts["dead_records"]) == (0, 1, 0), run
    tenth = sync.figures(sync.run())["contacts"]

    assert calls_for(sync, refused) == 10
    assert (tenth["rejected"], tenth["queued_records"], tenth["dead_records"]) == (1, 0, 1)
    row = queue_row(sync, refused)
    assert row["RejectionCount"] == 10 and row["DeadLetteredOn"] is not None
    assert "email: domain does not accept mail" in row["ResponseExcerpt"]

    eleventh = sync.run()

    assert calls_for(sync, refused) == 10  # dead-lettered: no call
    contacts = sync.figures(eleventh)["contacts"]
    assert (contacts["dead"], contacts["rejected"], contacts["dead_records"]) == (1, 0, 1)
    assert eleventh.success  # alerted on and kept, not a failure of every later run
    assert queue_row(sync, refused)["RejectionCount"] == 10  # no attempt, nothing counted


def test_a_record_answered_503_every_run_is_counted_alerted_on_and_dead_lettered(
    urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = account_id(1)  # the first call of every run: the only account not in Praxedo
    settings = {"retries": {"max_attempts": 2, "max_record_attempts": 3}, "alerts": {"record_failures": 2}}
    with field_service(urls, monkeypatch, DATA, settings) as sync:
        for run in range(1, 4):
            sync.praxedo.fail_next_calls(503, 503)  # its create and the retry of it
            accounts = sync.figures(sync.run())["accounts"]
            assert (accounts["failed"], accounts["rejected"]) == (1, 0), run  # failed, not refused
            row = queue_row(sync, failing)
            assert (row["RejectionCount"], row["HttpResponseCode"]) == (run, 503)
            alerts = failing_record_alerts(sync.log, ["field_service.Accounts"], threshold=2)
            assert [f"{failing} ({run}x)" in alert.summary for alert in alerts] == ([True] if run >= 2 else [])

        assert row["DeadLetteredOn"] is not None and accounts["dead_records"] == 1
        assert row["Reason"].startswith("failed to create after 2 attempt(s): HTTP 503")
        assert row["FirstReason"].startswith("failed to create after 2 attempt(s): HTTP 503")
        assert row["FirstRejectedOn"] < row["LastRejectedOn"]
        answered = len(sync.praxedo.results())

        fourth = sync.run()

        assert len(sync.praxedo.results()) == answered  # nothing else changed, and the dead account costs no call
        assert sync.figures(fourth)["accounts"]["dead"] == 1


def test_a_confirmed_resend_requeues_a_dead_record_and_the_next_run_sends_it_once(
    urls: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = "CON-00002-1"
    settings = {"retries": {"max_attempts": 2, "max_record_attempts": 3}}
    with field_service(urls, monkeypatch, DATA, settings) as sync:
        sync.praxedo.refuse("ContactManager", [refused], "email: domain does not accept mail")
        for _ in range(4):
            sync.run()
        assert calls_for(sync, refused) == 3 and queue_row(sync, refused)["DeadLetteredOn"] is not None
        sync.praxedo.stop_refusing("ContactManager", [refused])  # the address was fixed in Praxedo's rules
        capsys.readouterr()

        code = main(["resend", "--sync", "field_service", "--entity", "Contacts", "--id", refused, "--yes"])

        printed = capsys.readouterr().out
        assert code == 0
        assert f"1 record(s) of field_service.Contacts re-queued ({refused})" in printed
        row = queue_row(sync, refused)
        assert (row["RejectionCount"], row["DeadLetteredOn"]) == (0, None)

        result = sync.run()

        contacts = sync.figures(result)["contacts"]
        assert calls_for(sync, refused) == 4  # sent once more
        assert (contacts["created"], contacts["dead"], contacts["queued_records"]) == (1, 0, 0)
        assert refused in sync.praxedo.held("ContactManager")
        assert [row for row in table_rows(sync.log, rejected_table) if row["EntityId"] == refused] == []
        sync.run()
        assert calls_for(sync, refused) == 4  # delivered: unchanged from then on


def test_a_receiver_down_for_more_runs_than_the_attempts_dead_letters_no_record(
    urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"retries": {"max_attempts": 2, "max_record_attempts": 3}}
    with field_service(urls, monkeypatch, DATA, settings) as sync:
        for _ in range(4):  # Praxedo in maintenance: every call of four runs answered 503
            sync.praxedo.stop_failing()
            sync.praxedo.fail_next_calls(*[503] * 200)
            accounts = sync.figures(sync.run())["accounts"]
            assert (accounts["created"], accounts["failed"], accounts["dead"]) == (0, 6, 0)
        assert {row["RejectionCount"] for row in table_rows(sync.log, rejected_table)} == {4}
        assert all(row["DeadLetteredOn"] is None for row in table_rows(sync.log, rejected_table))
        sync.praxedo.stop_failing()  # back

        back = sync.figures(sync.run())

        assert [back[e]["created"] for e in ("accounts", "contacts", "work_orders")] == [6, 12, 18]
        assert table_rows(sync.log, rejected_table) == [], "each went through and left the queue"
