"""The CHR -> Praxedo syncs under Praxedo's faults, on the real PostgreSQL: a burst of 5xx and SOAP faults, a
record refused by Praxedo's validation, a record Praxedo holds already, the password changed mid-run, a
fault that quotes the credentials back. Each ends with a clean run: nothing lost, nothing created twice, and
the password (and its Basic header) in no output."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from sync_pipeline.demo.field_service_seed import PRAXEDO_USER, ChrData, account_id, chr_rows
from sync_pipeline_tests.fault.conftest import FaultLedger
from sync_pipeline_tests.field_service import PASSWORD, FieldService, field_service
from sync_pipeline_tests.real_db.conftest import fresh_databases

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
