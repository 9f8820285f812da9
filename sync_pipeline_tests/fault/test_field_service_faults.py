"""The CHR -> Praxedo syncs under Praxedo's faults, on the real PostgreSQL: a burst of 5xx and SOAP faults, a
record refused by Praxedo's validation, a record Praxedo holds already, the password changed mid-run, a
fault that quotes the credentials back, a search of completed work orders failing on every attempt. Each
ends with a clean run: nothing lost, nothing created twice, and the password (and its Basic header) in no
output."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync_pipeline.demo.field_service_seed import PRAXEDO_USER, ChrData, account_id, chr_rows
from sync_pipeline.engine.tables import cursor_table
from sync_pipeline_tests.fault.conftest import FaultLedger
from sync_pipeline_tests.field_service import PASSWORD, FieldService, field_service
from sync_pipeline_tests.real_db.conftest import fresh_databases, table_rows

DATA = ChrData(accounts=20, contacts=2, work_orders=2)
MANAGER_OF = {"Accounts": "CustomerManager", "Contacts": "ContactManager", "WorkOrders": "BusinessEventManager"}
KEY_OF = {"Accounts": "AccountId", "Contacts": "ContactId", "WorkOrders": "WorkOrderId"}
BASIC = base64.b64encode(f"{PRAXEDO_USER}:{PASSWORD}".encode()).decode()
ROTATED = "rotated-pw-93f1-DO-NOT-LOG"


@pytest.fixture
def sync(monkeypatch: pytest.MonkeyPatch) -> Iterator[FieldService]:
    settings = {"retries": {"max_attempts": 4, "initial_delay_seconds": 0.01, "max_delay_seconds": 0.05}}
    with (
        fresh_databases("postgresql", ("chr_db", "log_db")) as urls,
        field_service({"chr": urls["chr_db"], "log": urls["log_db"]}, monkeypatch, DATA, settings) as started,
    ):
        yield started


def settle(sync: FieldService, ledger: FaultLedger, secrets: tuple[str, ...] = (PASSWORD, BASIC)) -> None:
    """A clean run, then what every fault scenario must hold: each CHR record in Praxedo once under its id, its
    state kept, and no secret in any output."""
    final = sync.run()
    assert final.success, [e.message for e in final.all_events if e.is_failure]
    expected = chr_rows(DATA)
    lost = copies = 0
    for entity, manager in MANAGER_OF.items():
        held = set(sync.praxedo.held(manager))
        ids = {str(row[KEY_OF[entity]]) for row in expected[entity]}
        lost, copies = lost + len(ids - held), copies + len(held - ids)
    ledger.records_lost += lost
    ledger.duplicate_creates += copies
    assert (lost, copies) == (0, 0)
    assert all(figures["unchanged"] == figures["rows_found"] for figures in sync.figures(sync.run()).values())
    assert ledger.search_for_secrets(sync.outputs(), secrets) == []


def test_a_burst_of_5xx_and_soap_faults_is_retried_and_one_refused_record_waits_alone(
    sync: FieldService, ledger: FaultLedger
) -> None:
    sync.praxedo.fail_next_calls(503, 500, 502, 500, 503, 500, echo_credentials=True)
    sync.praxedo.refuse("ContactManager", ["CON-00007-2"], "email: domain does not accept mail")

    first = sync.run()

    figures = sync.figures(first)
    assert figures["accounts"]["retries"] >= 3 and figures["accounts"]["created"] + figures["accounts"]["failed"] == 20
    assert figures["contacts"]["rejected"] == 1
    sync.praxedo.stop_refusing("ContactManager", ["CON-00007-2"])  # its e-mail fixed: accepted from now on
    settle(sync, ledger)


def test_records_praxedo_holds_already_are_adopted_not_created_again(sync: FieldService, ledger: FaultLedger) -> None:
    for number in (2, 9, 17):
        sync.praxedo.put("CustomerManager", {"id": account_id(number), "name": "typed in by hand"})
    sync.praxedo.put("BusinessEventManager", {"id": "WO-00004-1", "customerId": account_id(4), "title": "old"})

    first = sync.run()

    assert sync.figures(first)["accounts"]["adopted"] == 3 and sync.figures(first)["work_orders"]["adopted"] == 1
    assert sync.praxedo.held("CustomerManager")[account_id(9)]["name"] == "Customer 9 SARL"
    settle(sync, ledger)


def test_a_password_changed_mid_run_stops_the_entity_and_the_right_one_finishes_the_job(
    sync: FieldService, ledger: FaultLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync.praxedo.change_password(ROTATED, after_calls=6)  # the Praxedo admin rotates it while the run is under way

    first = sync.run()

    assert not first.success
    assert sync.praxedo.unauthorized >= 1
    assert sync.figures(first)["accounts"]["created"] == 6
    monkeypatch.setenv("PRAXEDO_PASSWORD", ROTATED)  # the deployment is given the new one
    rotated_basic = base64.b64encode(f"{PRAXEDO_USER}:{ROTATED}".encode()).decode()
    settle(sync, ledger, (PASSWORD, BASIC, ROTATED, rotated_basic))


def test_completed_statuses_survive_a_search_praxedo_keeps_failing_and_the_mark_waits_for_them(
    sync: FieldService, ledger: FaultLedger
) -> None:
    assert sync.run().success  # every record is in Praxedo; from now on only the search calls it
    done = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)
    completed = [f"WO-{number:05d}-1" for number in range(1, 21)]
    sync.praxedo.complete(completed, "COMPLETED", done)
    sync.praxedo.fail_next_calls(503, 500, 503, 502, echo_credentials=True)  # every attempt at the first page

    failed = sync.run()

    figures = sync.figures(failed)["completed_work_orders"]
    assert not failed.success and figures["api_calls"] == 4 and figures["call_error_percent"] == 100.0
    assert [row for row in table_rows(sync.log, cursor_table) if "Completed" in row["EntityType"]] == []
    settle_completed(sync, ledger, completed)
    settle(sync, ledger)


def settle_completed(sync: FieldService, ledger: FaultLedger, completed: list[str]) -> None:
    """A clean run of the status sync: every completed work order Completed in CHR, none lost."""
    result = sync.run()
    statuses = {
        row["WorkOrderId"]: row["Status"]
        for row in table_rows(sync.chr, sa.Table("CHR_WORK_ORDER", sa.MetaData(), autoload_with=sync.chr))
    }
    lost = [order for order in completed if statuses[order] != "Completed"]
    ledger.records_lost += len(lost)
    assert lost == []
    assert (sync.figures(result)["completed_work_orders"]["updated"], result.success) == (len(completed), True)
