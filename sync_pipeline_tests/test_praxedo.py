"""The Praxedo connector: engine creates and updates rendered as Praxedo's operations and read back as HTTP
statuses, against the local Praxedo; and what the field-service declaration and settings refuse at load."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from sync_pipeline.cli import main
from sync_pipeline.demo.field_service_seed import PRAXEDO_USER, SYNC, ChrData, field_service_settings
from sync_pipeline.demo.packaged import packaged_attributes
from sync_pipeline.demo.praxedo import PraxedoSimulator
from sync_pipeline.engine.http.api import ApiCallFailed
from sync_pipeline.engine.sources.http_pages import HttpPagesSource
from sync_pipeline.engine.sources.http_windows import WindowedPagesSource
from sync_pipeline.engine.sources.sql_table import SourceRefused
from sync_pipeline.orchestration.alerts import ALERT_WEBHOOK_KEY, RECORDS_FAILING, AlertWebhook, build_alert_sensor
from sync_pipeline.orchestration.component import SyncComponent, declared_spec
from sync_pipeline.orchestration.sync_assets import entity_plan
from sync_pipeline.resources.database import SyncDatabase
from sync_pipeline.resources.praxedo_client import PraxedoApiClient
from sync_pipeline.settings import AlertSettings, SettingsError
from sync_pipeline_tests.field_service import field_service
from sync_pipeline_tests.test_alerts import WebhookReceiver

PASSWORD = "pw-4e1b-DO-NOT-LOG"


@pytest.fixture
def praxedo() -> Iterator[PraxedoSimulator]:
    with PraxedoSimulator(PRAXEDO_USER, PASSWORD) as simulator:
        yield simulator


def client(password: str = PASSWORD) -> PraxedoApiClient:
    return PraxedoApiClient(username=PRAXEDO_USER, password=password, timeout_seconds=5.0)


def body(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def test_a_create_is_the_managers_create_operation_and_its_result_comes_back_as_a_status(
    praxedo: PraxedoSimulator,
) -> None:
    customers = f"{praxedo.base_url}CustomerManager"

    created = client().request("POST", customers, body({"id": "ACC-1", "name": "Acme"}))
    taken = client().request("POST", customers, body({"id": "ACC-1", "name": "Acme again"}))
    refused = client().request("POST", customers, body({"id": "ACC-2"}))

    assert (created.status_code, json.loads(created.body)["id"]) == (200, "ACC-1")
    assert taken.status_code == 409 and "already used" in json.loads(taken.body)["message"]
    assert refused.status_code == 422 and json.loads(refused.body)["message"] == "name: required"
    assert [(r.operation, r.record_id, r.result_code) for r in praxedo.results()] == [
        ("createCustomers", "ACC-1", 0),
        ("createCustomers", "ACC-1", 12),
        ("createCustomers", "ACC-2", 30),
    ]
    assert praxedo.held("CustomerManager") == {"ACC-1": {"id": "ACC-1", "name": "Acme"}}


def test_an_update_is_the_managers_update_operation_at_the_id_and_an_unknown_id_is_a_404(
    praxedo: PraxedoSimulator,
) -> None:
    events = f"{praxedo.base_url}BusinessEventManager"
    praxedo.put("CustomerManager", {"id": "ACC-1", "name": "Acme"})
    client().request("POST", events, body({"id": "WO-1", "customerId": "ACC-1", "title": "Boiler"}))

    updated = client().request("PUT", f"{events}/WO-1", body({"id": "WO-1", "customerId": "ACC-1", "title": "Pump"}))
    unknown = client().request("PUT", f"{events}/WO-9", body({"id": "WO-9", "customerId": "ACC-1", "title": "Pump"}))
    dangling = client().request("POST", events, body({"id": "WO-2", "customerId": "ACC-404", "title": "Pump"}))

    assert (updated.status_code, unknown.status_code, dangling.status_code) == (200, 404, 422)
    event = praxedo.held("BusinessEventManager")["WO-1"]
    assert dt.datetime.fromisoformat(event.pop("lastModificationDate")).utcoffset() == dt.timedelta(0)
    assert event == {
        "id": "WO-1",
        "customerId": "ACC-1",
        "title": "Pump",
        "status": "NEW",  # Praxedo's own status: an update from CHR does not move it
    }
    assert [r.operation for r in praxedo.results()] == ["createEvents", "updateEvent", "updateEvent", "createEvents"]


def test_a_wrong_password_is_answered_401_and_faults_pass_through_for_the_retry_loop(praxedo: PraxedoSimulator) -> None:
    customers = f"{praxedo.base_url}CustomerManager"
    praxedo.fail_next_calls(503)

    assert client("not-the-password").request("POST", customers, body({"id": "A", "name": "A"})).status_code == 401
    fault = client().request("POST", customers, body({"id": "A", "name": "A"}))
    assert fault.status_code == 503 and "service unavailable" in fault.body
    assert client().request("POST", customers, body({"id": "A", "name": "A"})).status_code == 200
    assert praxedo.unauthorized == 1


def test_a_call_that_is_no_praxedo_create_or_update_is_refused_naming_the_managers() -> None:
    with pytest.raises(ApiCallFailed, match="must end in one of BusinessEventManager, CustomerManager"):
        client().request("POST", "https://eu1.praxedo.com/eTech/services/cxf/v6/WorkOrders", b"{}")
    with pytest.raises(ApiCallFailed, match="created one by one"):
        client().post_batch("https://eu1.praxedo.com/eTech/services/cxf/v6/CustomerManager", b"[]", "key")


def packaged(entities_change: dict[str, Any] | None = None, **settings: Any) -> dict[str, Any]:
    attributes = packaged_attributes(
        SYNC, field_service_settings("https://eu1.praxedo.com/eTech/services/cxf/v6/", settings)
    )
    for name, change in (entities_change or {}).items():
        entity = next(e for e in attributes["entities"] if e["name"] == name)
        entity.update(change)
    return attributes


def test_the_packaged_field_service_syncs_build_four_chained_assets_and_a_praxedo_client() -> None:
    defs = dg.build_defs_for_component(SyncComponent.resolve_from_dict(packaged()))

    graph = defs.resolve_asset_graph()
    contacts, orders = dg.AssetKey("field_service_contacts"), dg.AssetKey("field_service_work_orders")
    assert graph.get(contacts).parent_keys == {dg.AssetKey("field_service_accounts")}
    assert graph.get(orders).parent_keys == {contacts}
    assert graph.get(dg.AssetKey("field_service_completed_work_orders")).parent_keys == {orders}
    resource = (defs.resources or {})["field_service_sync_api"]
    assert isinstance(resource, PraxedoApiClient)
    assert resource.username == PRAXEDO_USER and resource.password == dg.EnvVar("PRAXEDO_PASSWORD")


def test_praxedo_is_called_with_its_web_service_user_not_a_token() -> None:
    attributes = packaged()
    attributes["settings"]["api"]["auth"] = {"kind": "bearer"}

    with pytest.raises(
        SettingsError, match=r"api\.auth\.kind: bearer is not how this product calls Praxedo; use basic"
    ):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(attributes))


def completed_search(praxedo: PraxedoSimulator, start: dt.datetime, end: dt.datetime) -> WindowedPagesSource:
    """The packaged CompletedWorkOrders search from `start` to `end`, read through the Praxedo client."""
    spec = declared_spec(SYNC).entity("CompletedWorkOrders")
    assert spec.http_source is not None and spec.http_source.window is not None
    source = spec.http_source
    api, window = client(), spec.http_source.window
    too_many = (window.too_many_path, window.too_many_value)

    def pages(params: dict[str, str]) -> HttpPagesSource:
        return HttpPagesSource(
            f"{praxedo.base_url}BusinessEventManager",
            source.pagination,
            spec.fields,
            "id",
            get=lambda url: api.request("GET", url, None),
            on_attempt=lambda attempt: None,
            params={**dict(source.params), **params},
            too_many=too_many,
        )

    names = [field.name for field in spec.fields]
    return WindowedPagesSource(window, start, end, pages, names.index("lastModificationDate"), names.index("id"))


def test_a_search_matching_more_than_2000_events_is_split_in_date_windows_and_reads_each_event_once(
    praxedo: PraxedoSimulator,
) -> None:
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    for n in range(2100):  # 2,100 completed in ten days, and 30 still in progress among them
        modified = (start + dt.timedelta(minutes=7 * n)).isoformat()
        praxedo.put("BusinessEventManager", {"id": f"WO-{n}", "status": "COMPLETED", "lastModificationDate": modified})
    for n in range(30):
        praxedo.put(
            "BusinessEventManager",
            {"id": f"WO-N{n}", "status": "IN_PROGRESS", "lastModificationDate": start.isoformat()},
        )
    search = completed_search(praxedo, start, start + dt.timedelta(minutes=7 * 2100))  # halves of 1,050

    ids = [row[0] for page in search.pages() for row in page.rows]

    assert sorted(ids) == sorted(f"WO-{n}" for n in range(2100)) and len(ids) == 2100
    assert search.splits == 1
    searches = praxedo.searches()
    assert {s["batchSize"] for s in searches} == {50}, "Praxedo answers at most 50 a call"
    # One answer 155, then each half of 1,050 by keyset: a page starts at the newest stamp of the one before
    # (one event read again, and dropped), so 50 + 21 x 49 events in 22 requests, the last one short.
    assert len(searches) == 1 + 2 * 22


def test_a_window_still_too_full_at_its_smallest_stops_the_read_naming_it(praxedo: PraxedoSimulator) -> None:
    moment = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    for n in range(2001):
        praxedo.put(
            "BusinessEventManager", {"id": f"WO-{n}", "status": "VALIDATED", "lastModificationDate": moment.isoformat()}
        )
    search = completed_search(praxedo, moment, moment + dt.timedelta(seconds=4))

    with pytest.raises(
        SourceRefused, match=r"even in a window of 1 s from 2026-11-01T00:00:00\+00:00 \(window.min_seconds 1\)"
    ):
        list(search.pages())


@pytest.mark.parametrize(
    ("entities", "settings", "message"),
    [
        ({}, {"api": {"protocol": "rest"}}, "basic is only read with api.protocol praxedo"),
        (
            {"Contacts": {"references": [{"field": "Account", "entity": "Accounts"}]}},
            {},
            r"references\[0\].field: 'Account' is not one of its fields",
        ),
        (
            {"Contacts": {"references": [{"field": "AccountId", "entity": "WorkOrders"}]}},
            {},
            r"'WorkOrders' is not an entity declared before it \(earlier: Accounts\)",
        ),
        (
            {"Accounts": {"state": "never_sent", "sink": {"kind": "http_batch"}}},
            {},
            "Accounts has a http_batch sink; only the records of an http_records sink",
        ),
        (
            {},
            {"retries": {"max_record_attempts": 2}},
            r"retries.max_record_attempts: must be at least alerts.record_failures \(3\)",
        ),
        (
            {},
            {"entities": {"Accounts": {"source_api": "chr"}}},
            "entities.Accounts.source_api: not read, Accounts has no HTTP source",
        ),
        (
            {},
            {
                "apis": {"chr": {"base_url": "https://chr.example.com/api/v1/"}},
                "entities": {"CompletedWorkOrders": {"source_api": "crm"}},
            },
            r"entities.CompletedWorkOrders.source_api: 'crm' is not one of apis \(chr\)",
        ),
        (
            {},
            {"entities": {"Invoices": {"sink": {"kind": "http_records"}}}},
            "entities.Invoices: is not a known entity",
        ),
        (
            {},
            {"entities": {"Accounts": {"lookback_seconds": 60}}},
            "entities.Accounts.lookback_seconds: only read for a since_cursor entity whose cursor is a datetime",
        ),
        (
            {},
            {"entities": {"WorkOrders": {"first_window_days": 7}}},
            r"entities.WorkOrders.first_window_days: only read for a windowed search \(source.window\)",
        ),
        (
            {"CompletedWorkOrders": {"cursor_field": "id"}},
            {},
            "a search window is a time window, so its cursor id must be a datetime field",
        ),
        (
            {
                "CompletedWorkOrders": {
                    "sink": {
                        "kind": "sql_update",
                        "db": "chr_db",
                        "key_columns": ["WorkOrderId"],
                        "columns": ["Status", "CompletedOn"],
                        "forward_only": {"column": "Phase", "order": ["Open", "Closed"]},
                    }
                }
            },
            {},
            r"sink.forward_only.column: 'Phase' is not one of the columns the update sets \(Status, CompletedOn\)",
        ),
        (
            {"Accounts": {"sink": {"kind": "http_records", "id_field": "praxedoId", "on_conflict": "update"}}},
            {},
            "sink.id_field: 'praxedoId' is not in the record sent",
        ),
        (
            {},
            {"entities": {"Accounts": {"endpoint": "Customers"}}},
            "entities.Accounts.endpoint: 'Customers' names no Praxedo manager",
        ),
        (
            {"Accounts": {"sink": {"kind": "http_batch", "on_conflict": "update"}, "state": "never_sent"}},
            {},
            "sink.on_conflict: only read by an http_records sink",
        ),
    ],
)
def test_what_the_field_service_declaration_and_settings_refuse_at_load(
    entities: dict[str, Any], settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(packaged(entities, **settings)))


def test_the_logs_command_lists_a_field_service_entitys_failed_calls_with_praxedos_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("chr", "log")}
    with field_service(urls, monkeypatch, ChrData(accounts=3, contacts=1, work_orders=0)) as sync:
        sync.praxedo.refuse("ContactManager", ["CON-00002-1"], "lastName: too long for Praxedo")
        sync.run()
    capsys.readouterr()

    code = main(["logs", "--sync", SYNC, "--entity", "Contacts", "--status", "Failure", "--format", "json"])

    printed = capsys.readouterr()
    assert code == 0, printed.err
    (row,) = json.loads(printed.out)
    assert row["entity"] == "field_service.Contacts" and row["http_response_code"] == 422
    assert "lastName: too long for Praxedo" in row["exception_message"]
    assert main(["logs", "--sync", SYNC, "--entity", "Users"]) == 2
    assert "Users is not an entity of field_service: Accounts, Contacts, WorkOrders" in capsys.readouterr().err


def test_a_record_refused_three_runs_in_a_row_raises_an_alert_naming_it_that_clears_once_it_goes_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = {name: f"sqlite:///{tmp_path / name}.db" for name in ("chr", "log")}
    with (
        WebhookReceiver() as webhook,
        field_service(urls, monkeypatch, ChrData(accounts=3, contacts=1, work_orders=1)) as sync,
    ):
        settings = AlertSettings(record_failures=3, ui_base_url="http://127.0.0.1:3000")
        sensor = build_alert_sensor(settings, declared_spec(SYNC))
        resources = {
            "field_service_log_db": SyncDatabase(url=urls["log"]),
            ALERT_WEBHOOK_KEY: AlertWebhook(url=webhook.url),
        }
        cursor: str | None = None

        def tick() -> list[dict[str, Any]]:
            nonlocal cursor
            before = len(webhook.bodies)
            with dg.build_sensor_context(instance=sync.instance, cursor=cursor, resources=resources) as context:
                cursor = sensor.evaluate_tick(context).cursor
            return [
                body["sync_alert"]
                for body in webhook.bodies[before:]
                if body["sync_alert"]["condition"] == RECORDS_FAILING
            ]

        sync.praxedo.refuse("ContactManager", ["CON-00002-1"], "email: domain does not accept mail")
        for _ in range(2):
            sync.run()
        assert tick() == []  # refused twice: not yet

        sync.run()
        (started,) = tick()
        assert started["state"] == "started" and started["entity"] == "field_service.Contacts"
        assert "CON-00002-1 (3x)" in started["summary"]
        assert "email: domain does not accept mail" in started["first_error"]
        assert tick() == []  # announced once, not every evaluation

        sync.praxedo.stop_refusing("ContactManager", ["CON-00002-1"])
        sync.run()
        (resolved,) = tick()
        assert resolved["state"] == "resolved" and resolved["entity"] == "field_service.Contacts"


def test_an_http_source_on_another_api_reads_at_that_apis_base_url_with_its_client() -> None:
    chr_base = "https://chr.example.com/api/v1/"
    attributes = packaged(
        apis={"chr": {"base_url": chr_base, "api_key_env_var": "CHR_API_KEY"}},
        entities={"CompletedWorkOrders": {"source_api": "chr", "endpoint": "workorders/completed"}},
    )
    component = SyncComponent.resolve_from_dict(attributes)
    sync, settings = component.resolved(Path("."))

    plan = entity_plan(sync, sync.entity("CompletedWorkOrders"), settings)

    assert plan.source_url == f"{chr_base}workorders/completed"
    defs = dg.build_defs_for_component(component)
    asset = defs.resolve_assets_def("field_service_completed_work_orders")
    assert asset.required_resource_keys >= {"field_service_chr_api"}
    assert "field_service_sync_api" not in asset.required_resource_keys, "it calls Praxedo not at all"


def test_an_event_modified_out_of_the_window_while_it_is_paged_makes_no_other_event_skipped(
    praxedo: PraxedoSimulator,
) -> None:
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    for n in range(120):
        modified = (start + dt.timedelta(minutes=n)).isoformat()
        praxedo.put(
            "BusinessEventManager", {"id": f"WO-{n:03d}", "status": "COMPLETED", "lastModificationDate": modified}
        )
    search = completed_search(praxedo, start, start + dt.timedelta(days=1))
    pages = search.pages()

    ids = [row[0] for row in next(pages).rows]
    # A technician edits an event already read: its stamp leaves the window (by offset, WO-050 would be skipped).
    praxedo.complete(["WO-010"], "VALIDATED", start, modified_on=start + dt.timedelta(days=2))
    ids += [row[0] for page in pages for row in page.rows]

    assert sorted(ids) == [f"WO-{n:03d}" for n in range(120)] and len(ids) == 120


def test_a_sink_given_in_the_settings_that_cannot_work_is_refused_naming_the_settings_and_the_sink() -> None:
    attributes = packaged(entities={"CompletedWorkOrders": {"sink": {"kind": "http_batch"}}})

    with pytest.raises(SettingsError) as raised:
        dg.build_defs_for_component(SyncComponent.resolve_from_dict(attributes))

    message = str(raised.value)
    assert "gives entities.CompletedWorkOrders.sink in place of the declaration's" in message
    assert "entities.CompletedWorkOrders.state: since_cursor cannot go with a http_batch sink" in message
