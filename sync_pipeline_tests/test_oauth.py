"""OAuth2 client credentials through the real transport, against the local Zuora: one token for a
whole pull, one refresh for a revoked token, renewal before expiry, one token request for threads
refused together, clear errors without the secret, token requests retried, tokens redacted."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from sync_pipeline.demo.zuora import ZuoraSimulator, ZuoraTenant, new_credentials
from sync_pipeline.engine.http.api import ApiResponse, TokenEndpointUnavailable, TokenRequestRefused
from sync_pipeline.engine.http.oauth import ClientCredentials, TokenCounts
from sync_pipeline.engine.http.retry import RetryPolicy
from sync_pipeline.engine.http.transport import REDACTED, Transport

from .test_transport import FakeClock

QUICK_RETRIES = RetryPolicy(max_attempts=3, initial_delay=0.5, max_delay=60.0)


@pytest.fixture
def clock() -> FakeClock:
    """Time shared by the simulator (token expiry, rate-limit windows) and the credentials (renewal, waits)."""
    return FakeClock()


@pytest.fixture
def zuora(clock: FakeClock) -> Iterator[ZuoraSimulator]:
    """A simulator whose tokens live two minutes."""
    with ZuoraSimulator(token_lifetime_seconds=120, clock=clock.now) as simulator:
        yield simulator


def credentials(zuora: ZuoraSimulator, tenant: ZuoraTenant, clock: FakeClock) -> ClientCredentials:
    return ClientCredentials(
        zuora.token_url,
        tenant.client_id,
        tenant.client_secret,
        retry_policy=QUICK_RETRIES,
        clock=clock.now,
        sleep=clock.sleep,
    )


def read_pages(transport: Transport, zuora: ZuoraSimulator, between_pages: int = 0, then: object = None) -> list[int]:
    """Every page's status, following `next_page` from page 1 at 50 a page."""
    statuses: list[int] = []
    url: str | None = f"{zuora.base_url}/workflows?page=1&page_length=50"
    while url is not None:
        answer = transport.request("GET", url)
        statuses.append(answer.status_code)
        if between_pages and len(statuses) == between_pages and callable(then):
            then()
        url = json.loads(answer.body)["pagination"]["next_page"] if answer.is_2xx else None
    return statuses


def test_a_sixty_page_pull_uses_one_token(zuora: ZuoraSimulator, clock: FakeClock) -> None:
    acme = zuora.add_tenant("acme", workflows=3000)
    auth = credentials(zuora, acme, clock)
    assert read_pages(Transport(auth), zuora) == [200] * 60
    assert auth.counts == TokenCounts(requests=1, issued=1)
    assert zuora.counts.token_requests[acme.client_id] == 1


def test_a_token_revoked_mid_pull_costs_one_refresh_and_no_failed_call(zuora: ZuoraSimulator, clock: FakeClock) -> None:
    acme = zuora.add_tenant("acme", workflows=3000)
    auth = credentials(zuora, acme, clock)

    statuses = read_pages(Transport(auth), zuora, between_pages=30, then=lambda: zuora.revoke_tokens(acme))

    assert statuses == [200] * 60
    assert auth.counts == TokenCounts(requests=2, issued=2)
    assert zuora.counts.unauthorized["/v1/workflows"] == 1


def test_a_token_is_kept_until_the_margin_before_expiry_then_renewed_without_a_401(
    zuora: ZuoraSimulator, clock: FakeClock
) -> None:
    acme = zuora.add_tenant("acme", workflows=1)
    auth = credentials(zuora, acme, clock)
    transport = Transport(auth)
    url = f"{zuora.base_url}/workflows"
    assert transport.request("GET", url).status_code == 200
    clock.sleep(59)  # tokens live 120 s, the margin is 60 s: still in force
    assert transport.request("GET", url).status_code == 200
    assert auth.counts.requests == 1
    clock.sleep(2)  # 61 s: within the margin, renewed though the simulator still takes it
    assert transport.request("GET", url).status_code == 200
    assert auth.counts.requests == 2
    clock.sleep(130)  # past the simulator's expiry of the second token

    assert transport.request("GET", url).status_code == 200
    assert auth.counts == TokenCounts(requests=3, issued=3)
    assert zuora.counts.unauthorized["/v1/workflows"] == 0


def test_a_token_shorter_lived_than_the_margin_is_still_used_for_half_its_life(clock: FakeClock) -> None:
    with ZuoraSimulator(token_lifetime_seconds=20, clock=clock.now) as zuora:
        acme = zuora.add_tenant("acme", workflows=1)
        auth = credentials(zuora, acme, clock)
        transport = Transport(auth)
        for _ in range(3):
            assert transport.request("GET", f"{zuora.base_url}/workflows").status_code == 200
            clock.sleep(3)
        assert auth.counts.requests == 1
        clock.sleep(1)  # 10 s: half of the token's life
        transport.request("GET", f"{zuora.base_url}/workflows")
        assert auth.counts.requests == 2


def test_threads_refused_with_the_same_token_cause_one_token_request(zuora: ZuoraSimulator, clock: FakeClock) -> None:
    acme = zuora.add_tenant("acme")
    auth = credentials(zuora, acme, clock)
    refused = auth.headers()
    start = threading.Barrier(8)
    answers: list[bool] = []

    def refresh() -> None:
        start.wait()
        answers.append(auth.refresh(refused))

    threads = [threading.Thread(target=refresh) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [True] * 8
    assert auth.counts == TokenCounts(requests=2, issued=2)
    assert auth.headers() != refused


def test_calls_on_many_threads_after_a_revocation_all_succeed_on_one_new_token(
    zuora: ZuoraSimulator, clock: FakeClock
) -> None:
    acme = zuora.add_tenant("acme", workflows=20)
    auth = credentials(zuora, acme, clock)
    transport = Transport(auth)
    assert transport.request("GET", f"{zuora.base_url}/workflows").status_code == 200
    zuora.revoke_tokens(acme)
    start = threading.Barrier(8)
    statuses: list[int] = []

    def export(workflow_id: int) -> None:
        start.wait()
        statuses.append(transport.request("GET", f"{zuora.base_url}/workflows/{workflow_id}/export").status_code)

    threads = [threading.Thread(target=export, args=(n,)) for n in zuora.workflow_ids(acme)[:8]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 8
    assert auth.counts.requests == 2


def test_bad_credentials_are_a_clear_error_naming_the_client_id_and_never_the_secret(
    zuora: ZuoraSimulator, clock: FakeClock
) -> None:
    ghost = new_credentials("ghost")
    auth = credentials(zuora, ghost, clock)
    with pytest.raises(TokenRequestRefused) as refused:
        Transport(auth).request("GET", f"{zuora.base_url}/workflows")
    message = str(refused.value)
    assert ghost.client_id in message and "HTTP 401 invalid_client" in message
    assert ghost.client_secret not in message and ghost.client_secret not in repr(auth)
    assert auth.counts.requests == 1  # a refusal is not retried


def test_a_token_endpoint_429_is_retried_after_its_retry_after(clock: FakeClock) -> None:
    with ZuoraSimulator(token_requests_per_window=1, window_seconds=10, clock=clock.now) as zuora:
        acme, globex = zuora.add_tenant("acme"), zuora.add_tenant("globex")
        credentials(zuora, acme, clock).headers()  # spends the window's one token request for this IP
        auth = credentials(zuora, globex, clock)

        assert auth.headers()["Authorization"].startswith("Bearer ")
        assert clock.waits == [10.0]
        assert auth.counts == TokenCounts(requests=2, issued=1)
        assert zuora.counts.throttled["/oauth/token"] == 1


def test_a_token_endpoint_5xx_is_retried_and_one_that_stays_down_is_unavailable(
    zuora: ZuoraSimulator, clock: FakeClock
) -> None:
    acme = zuora.add_tenant("acme")
    zuora.fail_token_requests(503)
    recovering = credentials(zuora, acme, clock)
    assert recovering.headers()
    assert recovering.counts == TokenCounts(requests=2, issued=1)

    zuora.fail_token_requests(503, 502, 500)
    down = credentials(zuora, acme, clock)
    with pytest.raises(TokenEndpointUnavailable, match=rf"client id '{acme.client_id}' after 3 attempts: HTTP 500"):
        down.headers()
    assert down.counts.requests == 3


def test_an_unreachable_token_endpoint_is_unavailable_after_retries(clock: FakeClock) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    tenant = new_credentials("acme")
    auth = ClientCredentials(
        f"http://127.0.0.1:{port}/oauth/token",
        tenant.client_id,
        tenant.client_secret,
        retry_policy=QUICK_RETRIES,
        sleep=clock.sleep,
    )
    with pytest.raises(TokenEndpointUnavailable, match="after 3 attempts: no answer") as down:
        auth.headers()
    assert tenant.client_secret not in str(down.value)


def test_an_error_body_echoing_the_token_comes_back_redacted(zuora: ZuoraSimulator, clock: FakeClock) -> None:
    acme = zuora.add_tenant("acme", workflows=1)
    (workflow_id,) = zuora.workflow_ids(acme)
    zuora.fail_exports(acme, [workflow_id], echo_headers=True)
    auth = credentials(zuora, acme, clock)

    answer: ApiResponse = Transport(auth).request("GET", f"{zuora.base_url}/workflows/{workflow_id}/export")

    token = auth.headers()["Authorization"].removeprefix("Bearer ")
    assert answer.status_code == 500
    assert token not in answer.body and f"Bearer {REDACTED}" in answer.body


def test_every_token_issued_and_the_client_secret_are_secrets(zuora: ZuoraSimulator, clock: FakeClock) -> None:
    acme = zuora.add_tenant("acme")
    auth = credentials(zuora, acme, clock)
    first = auth.headers()
    auth.refresh(first)
    second = auth.headers()
    tokens = {first["Authorization"].removeprefix("Bearer "), second["Authorization"].removeprefix("Bearer ")}
    assert len(tokens) == 2
    assert set(auth.secrets()) == {acme.client_secret, *tokens}
    assert not any(secret in repr(auth) for secret in auth.secrets())
