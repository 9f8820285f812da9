"""The local Zuora answers as Zuora's reference says: token answers, pages of workflows, exports,
bearer auth, rate-limit headers and 429s, per tenant; the demo and the pull tests stand on it."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sync_pipeline.demo.zuora import ZuoraSimulator, ZuoraTenant, new_credentials

from .test_transport import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """The simulator's time, moved on by the test."""
    return FakeClock()


@pytest.fixture
def zuora(clock: FakeClock) -> Iterator[ZuoraSimulator]:
    """A simulator with a small token budget per IP and a small request budget per tenant."""
    with ZuoraSimulator(token_requests_per_window=5, api_requests_per_window=10, clock=clock.now) as simulator:
        yield simulator


def token_answer(zuora: ZuoraSimulator, tenant: ZuoraTenant, **form: str) -> requests.Response:
    body = {"client_id": tenant.client_id, "client_secret": tenant.client_secret, "grant_type": "client_credentials"}
    return requests.post(zuora.token_url, data={**body, **form}, timeout=5)


def bearer(zuora: ZuoraSimulator, tenant: ZuoraTenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_answer(zuora, tenant).json()['access_token']}"}


def get(zuora: ZuoraSimulator, path: str, headers: dict[str, str], **params: Any) -> requests.Response:
    return requests.get(f"{zuora.base_url}{path}", headers=headers, params=params, timeout=5)


# The token endpoint.


def test_known_client_credentials_get_a_bearer_token_in_zuoras_shape(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme")
    answer = token_answer(zuora, acme)
    assert answer.status_code == 200
    token = answer.json()
    assert set(token) == {"access_token", "token_type", "expires_in", "scope", "jti"}
    assert token["token_type"] == "bearer" and token["expires_in"] == 3599
    assert len(acme.client_id) == 36 and len(acme.client_secret) <= 42
    assert zuora.counts.token_requests[acme.client_id] == 1


def test_unknown_credentials_and_a_wrong_secret_are_401_invalid_client(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme")
    ghost = new_credentials("ghost")
    wrong_secret = ZuoraTenant("acme", acme.client_id, "not-the-secret")
    for tenant in (ghost, wrong_secret):
        answer = token_answer(zuora, tenant)
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_client"
    assert token_answer(zuora, acme, grant_type="password").json() == {"error": "unsupported_grant_type"}
    assert token_answer(zuora, acme, client_secret="").status_code == 400


def test_the_token_endpoint_answers_429_with_retry_after_past_its_limit_per_ip(
    zuora: ZuoraSimulator, clock: FakeClock
) -> None:
    acme, globex = zuora.add_tenant("acme"), zuora.add_tenant("globex")
    statuses = [token_answer(zuora, tenant).status_code for tenant in (acme, globex, acme, globex, acme)]
    refused = token_answer(zuora, globex)
    assert statuses == [200] * 5 and refused.status_code == 429
    assert refused.headers["Retry-After"] == "60" and refused.headers["RateLimit-Remaining"] == "0"
    clock.sleep(60)
    assert token_answer(zuora, globex).status_code == 200
    assert zuora.counts.throttled["/oauth/token"] == 1


# Bearer auth on the API.


def test_a_call_without_a_token_or_with_a_revoked_or_expired_one_is_401(
    zuora: ZuoraSimulator, clock: FakeClock
) -> None:
    acme = zuora.add_tenant("acme", workflows=3)
    assert get(zuora, "/workflows", {}).status_code == 401
    assert get(zuora, "/workflows", {"Authorization": "Bearer made-up"}).status_code == 401
    revoked = bearer(zuora, acme)
    zuora.revoke_tokens(acme)
    assert get(zuora, "/workflows", revoked).status_code == 401
    expiring = bearer(zuora, acme)
    assert get(zuora, "/workflows", expiring).status_code == 200
    clock.sleep(3599)
    assert get(zuora, "/workflows", expiring).status_code == 401
    assert zuora.counts.unauthorized["/v1/workflows"] == 4


def test_revoking_one_tenants_tokens_leaves_the_others_working(zuora: ZuoraSimulator) -> None:
    acme, globex = zuora.add_tenant("acme", workflows=1), zuora.add_tenant("globex", workflows=1)
    acme_token, globex_token = bearer(zuora, acme), bearer(zuora, globex)
    zuora.revoke_tokens(acme)
    assert get(zuora, "/workflows", acme_token).status_code == 401
    assert get(zuora, "/workflows", globex_token).status_code == 200


# Pages of workflows.


def test_page_length_is_twenty_when_not_sent_and_next_page_links_the_following_page(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme", workflows=45)
    headers = bearer(zuora, acme)
    first = get(zuora, "/workflows", headers).json()
    assert len(first["data"]) == 20
    assert first["pagination"]["page"] == 1 and first["pagination"]["page_length"] == 20
    next_page = urllib.parse.urlsplit(first["pagination"]["next_page"])
    assert next_page.path == "/v1/workflows" and urllib.parse.parse_qs(next_page.query) == {
        "page": ["2"],
        "page_length": ["20"],
    }
    last = requests.get(first["pagination"]["next_page"].replace("page=2", "page=3"), headers=headers, timeout=5).json()
    assert [w["id"] for w in last["data"]] == zuora.workflow_ids(acme)[40:]
    assert last["pagination"]["next_page"] is None


def test_a_full_last_page_says_there_is_no_next_page(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme", workflows=40)
    second = get(zuora, "/workflows", bearer(zuora, acme), page=2, page_length=20).json()
    assert len(second["data"]) == 20 and second["pagination"]["next_page"] is None


def test_page_length_above_fifty_or_a_page_below_one_is_a_400(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme", workflows=60)
    headers = bearer(zuora, acme)
    assert len(get(zuora, "/workflows", headers, page_length=50).json()["data"]) == 50
    too_long = get(zuora, "/workflows", headers, page_length=51)
    assert too_long.status_code == 400 and "page_length" in too_long.json()["message"]
    assert get(zuora, "/workflows", headers, page=0).status_code == 400


def test_a_workflow_is_listed_with_its_id_name_and_iso_timestamps(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme", workflows=1)
    (workflow,) = get(zuora, "/workflows", bearer(zuora, acme)).json()["data"]
    assert workflow["id"] == zuora.workflow_ids(acme)[0] and workflow["name"] == "acme workflow 1"
    assert workflow["updatedAt"].endswith("Z") and "T" in workflow["updatedAt"]
    assert {"createdAt", "status", "active_version", "ondemandTrigger"} <= set(workflow)


def test_each_tenant_lists_only_its_own_workflows(zuora: ZuoraSimulator) -> None:
    acme, globex = zuora.add_tenant("acme", workflows=2), zuora.add_tenant("globex", workflows=3)
    listed = get(zuora, "/workflows", bearer(zuora, globex)).json()["data"]
    assert [w["id"] for w in listed] == zuora.workflow_ids(globex)
    assert not set(zuora.workflow_ids(acme)) & set(zuora.workflow_ids(globex))


def test_changing_a_workflow_bumps_its_updated_at_past_every_other_and_adding_one_lists_it(
    zuora: ZuoraSimulator,
) -> None:
    acme = zuora.add_tenant("acme", workflows=3)
    first = zuora.workflow_ids(acme)[0]
    zuora.put_workflow(acme, first, name="renamed")
    added = zuora.put_workflow(acme, name="brand new")
    listed = {w["id"]: w for w in get(zuora, "/workflows", bearer(zuora, acme)).json()["data"]}
    assert listed[first]["name"] == "renamed" and listed[added]["name"] == "brand new"
    others = [w["updatedAt"] for workflow_id, w in listed.items() if workflow_id not in (first, added)]
    assert max(others) < listed[first]["updatedAt"] < listed[added]["updatedAt"]


# Exports.


def test_an_export_is_linkages_tasks_and_the_workflow(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme", workflows=1)
    workflow_id = zuora.workflow_ids(acme)[0]
    export = get(zuora, f"/workflows/{workflow_id}/export", bearer(zuora, acme))
    assert export.status_code == 200
    assert set(export.json()) == {"linkages", "tasks", "workflow"}
    assert export.json()["workflow"]["id"] == workflow_id
    assert zuora.counts.calls[f"/v1/workflows/{workflow_id}/export"] == 1


def test_an_unknown_or_another_tenants_workflow_is_404(zuora: ZuoraSimulator) -> None:
    acme, globex = zuora.add_tenant("acme", workflows=1), zuora.add_tenant("globex", workflows=1)
    headers = bearer(zuora, globex)
    assert get(zuora, "/workflows/999999/export", headers).status_code == 404
    assert get(zuora, f"/workflows/{zuora.workflow_ids(acme)[0]}/export", headers).status_code == 404


def test_a_chosen_export_always_fails_and_can_echo_the_request_headers(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme", workflows=2)
    failing, working = zuora.workflow_ids(acme)
    zuora.fail_exports(acme, [failing], status=503, echo_headers=True)
    headers = bearer(zuora, acme)
    answers = [get(zuora, f"/workflows/{failing}/export", headers) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [503, 503]
    assert answers[0].json()["request_headers"]["Authorization"] == headers["Authorization"]
    assert get(zuora, f"/workflows/{working}/export", headers).status_code == 200


# Rate limits on the API.


def test_rate_limit_headers_count_down_and_a_spent_budget_is_429_until_the_window_resets(
    zuora: ZuoraSimulator, clock: FakeClock
) -> None:
    acme = zuora.add_tenant("acme", workflows=1)
    headers = bearer(zuora, acme)
    answers = [get(zuora, "/workflows", headers) for _ in range(11)]
    assert [a.headers["RateLimit-Remaining"] for a in answers[:10]] == [str(n) for n in range(9, -1, -1)]
    assert answers[0].headers["RateLimit-Limit"].startswith("10, 10;w=60")
    assert answers[0].headers["RateLimit-Reset"] == "60"
    throttled = answers[10]
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "60"
    clock.sleep(60)
    assert get(zuora, "/workflows", headers).status_code == 200
    assert zuora.counts.throttled["/v1/workflows"] == 1


def test_each_tenant_has_its_own_request_budget(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme", workflows=1, api_requests_per_window=1)
    globex = zuora.add_tenant("globex", workflows=1)
    acme_token, globex_token = bearer(zuora, acme), bearer(zuora, globex)
    assert [get(zuora, "/workflows", acme_token).status_code for _ in range(2)] == [200, 429]
    assert get(zuora, "/workflows", globex_token).status_code == 200


def test_injected_token_faults_answer_before_any_check(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme")
    zuora.fail_token_requests(503, 500)
    assert [token_answer(zuora, acme).status_code for _ in range(3)] == [503, 500, 200]


def test_the_track_id_is_echoed(zuora: ZuoraSimulator) -> None:
    acme = zuora.add_tenant("acme")
    answer = get(zuora, "/workflows", {**bearer(zuora, acme), "Zuora-Track-Id": "run-42"})
    assert answer.headers["Zuora-Track-Id"] == "run-42"
