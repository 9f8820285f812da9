"""The Zuora workflows pull when Zuora misbehaves: its token endpoint down, a token revoked mid-run, 429s,
workflows added and deleted while the pages are read. Each customer's run ends done, or failed for a
passing cause and retried; after a clean rerun no workflow is lost, and no secret shows anywhere.
"""

from __future__ import annotations

import threading

import pytest

from sync_pipeline.demo.zuora import ZuoraTenant
from sync_pipeline_tests.fault.conftest import FaultLedger
from sync_pipeline_tests.fault.zuora_pull import settle, zuora_pull
from sync_pipeline_tests.real_db.conftest import materialized
from sync_pipeline_tests.real_db.customer_pull import step_retries

WORKFLOWS = 200
"""Four full pages of 50."""
PAGES = "/v1/workflows"


def test_a_token_endpoint_down_past_every_retry_fails_the_customer_retryably_and_a_rerun_loses_nothing(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], ledger: FaultLedger
) -> None:
    with zuora_pull(monkeypatch, {"acme": WORKFLOWS}) as pull:
        acme = pull.tenants["acme"]
        attempts, runs = pull.settings["retries"]["max_attempts"], 1 + 2  # the declared two customer retries
        pull.zuora.fail_token_requests(*[503] * (attempts * runs))

        down = pull.run("acme")

        assert not down.success
        assert len(step_retries(down)) == 2, "a token endpoint that is down is a passing cause: tried again"
        assert pull.zuora.counts.token_requests[acme.client_id] == attempts * runs
        outcome = str(materialized(down)["outcome"])
        assert "HTTP 503" in outcome and acme.client_id in outcome
        (letter,) = pull.dead_letters()
        assert (letter.entity_type, letter.attempts) == ("zuora.Workflows/acme", runs)
        assert pull.rows() == []

        back = pull.run("acme")

        assert back.success
        assert materialized(back)["token_requests"] == 1
        assert pull.dead_letters() == []
        settle(pull, ledger, capfd)


def test_a_token_revoked_between_two_pages_costs_one_token_request_and_the_run_succeeds(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], ledger: FaultLedger
) -> None:
    with zuora_pull(monkeypatch, {"acme": WORKFLOWS}) as pull:
        acme = pull.tenants["acme"]
        revoked: list[int] = []

        def revoke_after_page_two(tenant: ZuoraTenant, page: int) -> None:
            if page == 2 and not revoked:
                revoked.append(page)
                pull.zuora.revoke_tokens(tenant)

        pull.zuora.after_page = revoke_after_page_two
        run = pull.run("acme")

        assert run.success
        assert revoked == [2]
        assert pull.zuora.counts.token_requests[acme.client_id] == 2
        assert materialized(run)["token_requests"] == 2
        assert pull.zuora.counts.unauthorized[PAGES] == 1
        assert pull.zuora.counts.calls[PAGES] == WORKFLOWS // 50 + 1  # page 3 sent again with the new token
        assert materialized(run)["sent"] == WORKFLOWS
        settle(pull, ledger, capfd)


def test_429s_from_another_client_using_up_the_window_are_waited_out_and_counted_as_throttled(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], ledger: FaultLedger
) -> None:
    """Each squall leaves no request in a one-second window: the next page is answered 429 with Retry-After 1."""
    with zuora_pull(monkeypatch, {"acme": WORKFLOWS}, window_seconds=1.0) as pull:
        squalls = {1, 3}

        def squall(tenant: ZuoraTenant, page: int) -> None:
            if page in squalls:
                pull.zuora.use_up_window(tenant)

        pull.zuora.after_page = squall
        run = pull.run("acme")

        assert run.success
        # Had a retry come before the window's reset, it would have been answered 429 again.
        assert pull.zuora.counts.throttled[PAGES] == len(squalls)
        assert materialized(run)["throttled"] == len(squalls)
        assert materialized(run)["retries"] == len(squalls)
        settle(pull, ledger, capfd)


def test_a_429_storm_that_outlasts_the_retries_fails_the_customer_retryably_and_a_rerun_loses_nothing(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], ledger: FaultLedger
) -> None:
    settings = {"customers": {"retry_delays_seconds": [0]}, "retries": {"max_attempts": 2}}
    with zuora_pull(monkeypatch, {"acme": WORKFLOWS}, settings, window_seconds=1.0) as pull:
        acme, attempts = pull.tenants["acme"], pull.settings["retries"]["max_attempts"]
        storm_over = threading.Event()

        def storm() -> None:
            while not storm_over.wait(0.05):
                pull.zuora.use_up_window(acme)

        stormer = threading.Thread(target=storm, name="429-storm")
        stormer.start()
        try:
            stormed = pull.run("acme")
        finally:
            storm_over.set()
            stormer.join()

        assert not stormed.success
        assert len(step_retries(stormed)) == 1, "a 429 is a passing cause: tried again"
        assert materialized(stormed)["throttled"] == attempts  # the last attempt's first page, every try
        assert pull.zuora.counts.throttled[PAGES] == 2 * attempts
        (letter,) = pull.dead_letters()
        assert letter.attempts == 2 and "HTTP 429" in letter.reason
        assert pull.rows() == []

        after = pull.run("acme")

        assert after.success
        assert pull.dead_letters() == []
        settle(pull, ledger, capfd)


def test_a_workflow_added_and_one_deleted_ahead_of_the_reading_lose_nothing_and_mark_only_the_deleted_one(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], ledger: FaultLedger
) -> None:
    with zuora_pull(monkeypatch, {"acme": WORKFLOWS}) as pull:
        acme = pull.tenants["acme"]
        assert pull.run("acme").success
        before = pull.zuora.workflow_ids(acme)
        gone = before[-10]  # on page 4, not read yet when it goes
        changed: list[int] = []

        def add_and_delete_after_page_two(tenant: ZuoraTenant, page: int) -> None:
            if page == 2 and not changed:
                changed.append(pull.zuora.put_workflow(tenant, name="added while the pages are read"))
                pull.zuora.delete_workflow(tenant, gone)

        pull.zuora.after_page = add_and_delete_after_page_two
        shifting = pull.run("acme")
        pull.zuora.after_page = None

        assert shifting.success
        throughout = set(before) - {gone}
        stored = {row["zuora_id"] for row in pull.rows("acme") if row["deleted_at"] is None}
        assert throughout <= stored, "a workflow that existed throughout the run was lost"
        assert pull.marked_deleted("acme") == {gone}
        assert pull.run("acme").success
        (added,) = changed
        assert added in {row["zuora_id"] for row in pull.rows("acme")}, "the next run has the added workflow"
        assert pull.marked_deleted("acme") == {gone}
        settle(pull, ledger, capfd)


def test_a_workflow_deleted_from_a_page_already_read_never_gets_a_live_one_marked_deleted(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], ledger: FaultLedger
) -> None:
    with zuora_pull(monkeypatch, {"acme": WORKFLOWS}) as pull:
        acme = pull.tenants["acme"]
        assert pull.run("acme").success
        before = pull.zuora.workflow_ids(acme)
        gone = before[0]  # on page 1, read before it goes: every later workflow moves up one place
        deleted: list[int] = []

        def delete_after_page_two(tenant: ZuoraTenant, page: int) -> None:
            if page == 2 and not deleted:
                deleted.append(gone)
                pull.zuora.delete_workflow(tenant, gone)

        pull.zuora.after_page = delete_after_page_two
        shifting = pull.run("acme")
        pull.zuora.after_page = None
        # The first workflow of page 3 moved onto page 2, already read: this listing never showed it. Its
        # export still answers, so it is not marked deleted; the deleted one is, by the next run.
        assert pull.marked_deleted("acme") == set()
        assert shifting.success
        assert set(before) <= {row["zuora_id"] for row in pull.rows("acme")}, "a stored workflow was removed"

        assert pull.run("acme").success
        assert pull.marked_deleted("acme") == {gone}
        settle(pull, ledger, capfd)


def test_an_export_that_always_fails_leaves_its_workflow_saved_marked_failed_and_is_tried_again_each_run(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], ledger: FaultLedger
) -> None:
    """The failing export's gateway echoes the request's headers, the bearer token among them, in its body."""
    with zuora_pull(monkeypatch, {"acme": WORKFLOWS}) as pull:
        acme = pull.tenants["acme"]
        broken = pull.zuora.workflow_ids(acme)[17]
        pull.zuora.fail_exports(acme, [broken], status=502, echo_headers=True)
        export = f"{PAGES}/{broken}/export"

        for run_number in (1, 2):
            run = pull.run("acme")

            assert run.success, "one export failing never fails the customer's run"
            figures = materialized(run)
            assert (figures["exports_ok"], figures["exports_failed"]) == (
                (WORKFLOWS - 1, 1) if run_number == 1 else (0, 1)
            )
            (row,) = [row for row in pull.rows("acme") if row["zuora_id"] == broken]
            assert (row["export_status"], row["export_json"]) == ("failed", None)
            assert "HTTP 502 after 3 attempts" in row["export_error"]
            assert pull.zuora.counts.calls[export] == 3 * run_number  # tried again on each run, retries included

        pull.zuora.restore_exports(acme, [broken])
        assert materialized(pull.run("acme"))["exports_ok"] == 1
        (row,) = [row for row in pull.rows("acme") if row["zuora_id"] == broken]
        assert row["export_status"] == "ok" and row["export_error"] is None
        settle(pull, ledger, capfd)
