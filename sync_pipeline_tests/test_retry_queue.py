"""The retry queue as people see and steer it: `sync-pipeline logs --sync field_service --status` lists Success,
Failure, Queued, Dead and Pending records per entity with their errors, and `sync-pipeline resend` re-queues dead
records only once confirmed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync_pipeline.cli import main
from sync_pipeline.demo.field_service_seed import SYNC, ChrData, account_id
from sync_pipeline.engine.tables import rejected_table
from sync_pipeline_tests.field_service import FieldService, field_service
from sync_pipeline_tests.real_db.conftest import table_rows

DEAD, QUEUED = "CON-00002-1", "CON-00001-1"
LATE = "CON-LATE-1"
"""A contact of an account CHR does not have yet: held back every run."""


@pytest.fixture
def sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FieldService]:
    """Three runs refusing one contact (dead-lettered after 3), then a fourth refusing an edited one (queued),
    then an account edited in CHR and not yet sent."""
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("chr", "log")}
    data = ChrData(accounts=3, contacts=1, work_orders=0, dangling_contacts=1)
    with field_service(urls, monkeypatch, data, {"retries": {"max_attempts": 2, "max_record_attempts": 3}}) as sync:
        sync.praxedo.refuse("ContactManager", [DEAD], "email: domain does not accept mail")
        for _ in range(3):
            sync.run()
        sync.edit("CHR_CONTACT", "ContactId", QUEUED, LastName="Van Damme-Dupont")
        sync.praxedo.refuse("ContactManager", [QUEUED], "lastName: too long for Praxedo")
        sync.run()
        sync.edit("CHR_ACCOUNT", "AccountId", account_id(3), Phone="+32 9 999 99 99")
        yield sync


def listed(capsys: pytest.CaptureFixture[str], *arguments: str) -> list[dict[str, Any]]:
    """What `sync-pipeline logs --sync field_service` prints as JSON with these arguments."""
    capsys.readouterr()
    code = main(["logs", "--sync", SYNC, *arguments, "--format", "json"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    rows: list[dict[str, Any]] = json.loads(printed.out)
    return rows


def dead_since(sync: FieldService, entity_id: str) -> object:
    (row,) = [row for row in table_rows(sync.log, rejected_table) if row["EntityId"] == entity_id]
    return row["DeadLetteredOn"]


def test_dead_lists_the_dead_lettered_record_with_its_attempts_and_praxedos_reason(
    sync: FieldService, capsys: pytest.CaptureFixture[str]
) -> None:
    (dead,) = listed(capsys, "--status", "Dead")

    assert (dead["entity"], dead["entity_id"], dead["attempts"]) == ("field_service.Contacts", DEAD, 3)
    assert dead["http_response_code"] == 422 and dead["dead_lettered_on"] is not None
    assert dead["first_error"] == dead["last_error"] == "rejected by the API: HTTP 422 to create"
    assert "email: domain does not accept mail" in dead["response_excerpt"]
    assert dead["first_failed_on"] < dead["last_failed_on"]


def test_queued_lists_a_record_to_be_tried_again_with_its_attempt_count_and_errors_in_any_case(
    sync: FieldService, capsys: pytest.CaptureFixture[str]
) -> None:
    (queued,) = listed(capsys, "--status", "queued", "--entity", "Contacts")

    assert (queued["entity_id"], queued["attempts"]) == (QUEUED, 1)
    assert queued["last_error"] == "rejected by the API: HTTP 422 to update"
    assert "lastName: too long for Praxedo" in queued["response_excerpt"]
    assert "dead_lettered_on" not in queued
    assert listed(capsys, "--status", "QUEUED", "--entity", "Accounts") == []


def test_pending_lists_what_the_source_holds_that_is_neither_delivered_nor_queued_and_why(
    sync: FieldService, capsys: pytest.CaptureFixture[str]
) -> None:
    pending = {row["entity_id"]: row for row in listed(capsys, "--status", "PENDING")}

    assert sorted(pending) == [account_id(3), LATE]  # the dead and the queued contact are listed as such
    assert pending[account_id(3)] == {
        "entity": "field_service.Accounts",
        "entity_id": account_id(3),
        "reason": "changed since last sent",
    }
    assert pending[LATE]["reason"].startswith(f"held back: AccountId {account_id(4)} is a field_service.Accounts")


def test_success_and_failure_list_schedulerlog_rows_and_an_unknown_status_is_refused_naming_the_allowed_ones(
    sync: FieldService, capsys: pytest.CaptureFixture[str]
) -> None:
    assert {row["status"] for row in listed(capsys, "--status", "success")} == {"Success"}
    failures = listed(capsys, "--status", "Failure", "--entity", "Contacts")
    assert len(failures) == 4 and {row["http_response_code"] for row in failures} == {422}

    with pytest.raises(SystemExit) as refused:
        main(["logs", "--sync", SYNC, "--status", "Stuck"])

    assert refused.value.code == 2
    assert "'Stuck' is not a status; one of Success, Failure, Pending, Queued, Dead" in capsys.readouterr().err
    assert main(["logs", "--sync", SYNC, "--status", "Dead", "--since", "2026-01-01"]) == 2
    assert "--since/--until do not apply to Dead" in capsys.readouterr().err


def test_resend_re_queues_nothing_unless_confirmed_and_refuses_a_record_that_is_not_dead(
    sync: FieldService, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    resend = ["resend", "--sync", SYNC, "--entity", "Contacts"]
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))

    assert main([*resend, "--all-dead"]) == 2

    printed = capsys.readouterr().err
    assert f"Re-queue 1 dead-lettered record(s) of field_service.Contacts ({DEAD})" in printed
    assert "refused, nothing re-queued: not confirmed (answer yes, or add --yes)" in printed
    assert dead_since(sync, DEAD) is not None
    assert main([*resend, "--id", QUEUED, "--id", DEAD, "--yes"]) == 1
    assert f"not dead-lettered in field_service.Contacts: {QUEUED}" in capsys.readouterr().err
    assert dead_since(sync, DEAD) is not None
    assert main(["resend", "--sync", SYNC, "--entity", "Users", "--all-dead", "--yes"]) == 2
    assert "Users is not an entity of field_service sent one call per record" in capsys.readouterr().err

    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    assert main([*resend, "--all-dead"]) == 0

    assert "1 record(s) of field_service.Contacts re-queued" in capsys.readouterr().out
    assert dead_since(sync, DEAD) is None
    assert listed(capsys, "--status", "Dead") == []
    assert [row["entity_id"] for row in listed(capsys, "--status", "Queued")] == [QUEUED, DEAD]  # newest first
