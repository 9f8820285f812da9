"""The field-service syncs reading CHR through its API instead of its database, by settings alone: the same
packaged declaration, settings naming CHR's API (`apis.chr`) as the source of accounts, contacts and work
orders and as where completed work orders go, against the local CHR API and the local Praxedo."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync_pipeline.demo.chr import ChrSimulator
from sync_pipeline.demo.field_service_seed import ChrData, chr_rows
from sync_pipeline.engine.tables import rejected_table
from sync_pipeline_tests.field_service import PASSWORD, FieldService, field_service
from sync_pipeline_tests.real_db.conftest import table_rows

DATA = ChrData(accounts=4, contacts=2, work_orders=2, dangling_contacts=1)
CHR_KEY = "chr-key-51ab-DO-NOT-LOG"
PAGES = {
    "kind": "http_pages",
    "pagination": {"style": "page_number", "page_size": 100, "records_path": "data"},
    "key_param": "ids",
}


def chr_api_settings(base_url: str) -> dict[str, Any]:
    """What a deployment reaching CHR through its API writes in its settings; the declaration is untouched."""

    def read_from(endpoint: str, **source: Any) -> dict[str, Any]:
        return {"source": {**PAGES, **source}, "source_api": "chr", "source_endpoint": endpoint, "table": None}

    return {
        "apis": {"chr": {"base_url": base_url, "api_key_env_var": "CHR_API_KEY"}},
        "entities": {
            "Accounts": read_from("accounts"),
            "Contacts": read_from("contacts"),
            "WorkOrders": read_from("workorders", since_param="modifiedSince"),
            "CompletedWorkOrders": {
                "sink": {"kind": "http_records", "update_method": "PATCH", "id_field": "WorkOrderId", "create": False},
                "sink_api": "chr",
                "endpoint": "workorders",
                "source_endpoint": "BusinessEventManager",
                "target_table": None,
            },
        },
    }


@pytest.fixture
def chr_api() -> Iterator[ChrSimulator]:
    rows = chr_rows(DATA)
    named = {"accounts": rows["Accounts"], "contacts": rows["Contacts"], "workorders": rows["WorkOrders"]}
    with ChrSimulator(CHR_KEY, named) as simulator:
        yield simulator


@pytest.fixture
def sync(chr_api: ChrSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FieldService]:
    monkeypatch.setenv("CHR_API_KEY", CHR_KEY)
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("chr", "log")}
    with field_service(urls, monkeypatch, DATA, chr_api_settings(chr_api.base_url), seed_database=False) as started:
        yield started


def test_accounts_contacts_and_work_orders_are_read_from_chrs_api_and_statuses_go_back_to_it(
    sync: FieldService, chr_api: ChrSimulator
) -> None:
    first = sync.figures(sync.run())

    assert [first[e]["created"] for e in ("accounts", "contacts", "work_orders")] == [4, 8, 8]
    assert first["contacts"]["held_back"] == 1, "CON-LATE-1's account is in neither CHR nor Praxedo"
    assert sorted(sync.praxedo.held("BusinessEventManager")) == sorted(chr_api.held("workorders"))
    assert chr_api.unauthorized == 0
    chr_api.put("workorders", {**chr_api.held("workorders")["WO-00002-1"], "Status": "Closed"})
    done = dt.datetime(2026, 12, 1, 16, 30, tzinfo=dt.UTC)
    sync.praxedo.complete(["WO-00001-1", "WO-00002-1"], "COMPLETED", done)
    sync.praxedo.complete(["WO-00001-2"], "VALIDATED", None)  # validated without a completion date: cancelled

    second = sync.figures(sync.run())

    assert second["completed_work_orders"]["updated"] == 3
    orders = chr_api.held("workorders")
    assert {wo: orders[wo]["Status"] for wo in ("WO-00001-1", "WO-00001-2", "WO-00002-1", "WO-00003-1")} == {
        "WO-00001-1": "Completed",
        "WO-00001-2": "Cancelled",
        "WO-00002-1": "Closed",  # CHR keeps its later status
        "WO-00003-1": "Open",
    }
    assert dt.datetime.fromisoformat(orders["WO-00001-1"]["CompletedOn"]) == done
    assert [e for e in ("accounts", "contacts", "work_orders") if second[e]["sent"]] == []

    patches = len(chr_api.patches)
    third = sync.figures(sync.run())

    assert len(chr_api.patches) == patches, "the statuses re-read inside the lookback are unchanged: no call"
    assert third["completed_work_orders"]["rows_found"] == 3 and third["completed_work_orders"]["sent"] == 0
    leaked = [where for where, text in sync.outputs().items() if CHR_KEY in text or PASSWORD in text]
    assert leaked == [], "CHR's API key and Praxedo's password are in no log row, table or event"


def test_a_completed_work_order_chrs_api_does_not_know_is_queued_with_its_404(
    sync: FieldService, chr_api: ChrSimulator
) -> None:
    sync.run()
    sync.praxedo.put("BusinessEventManager", {"id": "WO-BY-HAND", "status": "NEW"})
    sync.praxedo.complete(["WO-BY-HAND"], "COMPLETED", dt.datetime(2026, 12, 1, tzinfo=dt.UTC))

    figures = sync.figures(sync.run())["completed_work_orders"]

    assert figures["failed"] == 1, "a 404 on an update: failed, queued, tried again next run"
    (queued,) = [row for row in table_rows(sync.log, rejected_table) if row["EntityId"] == "WO-BY-HAND"]
    assert queued["HttpResponseCode"] == 404 and "no work order WO-BY-HAND" in queued["Reason"]
    assert "WO-BY-HAND" not in chr_api.held("workorders")
