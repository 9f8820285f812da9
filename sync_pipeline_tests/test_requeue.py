"""A dead-lettered customer is re-queued by a confirmed command: `sync-pipeline requeue` marks its dead letter,
the customers sensor launches one run of it per mark, and a run that succeeds removes the dead letter."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sync_pipeline.cli import main
from sync_pipeline.demo.zuora import ZuoraSimulator, ZuoraTenant
from sync_pipeline.engine.state.dead_letters import DeadLetters
from sync_pipeline.orchestration.component import COMPONENT_TYPE
from sync_pipeline.orchestration.customers import REQUEUED_TAG

from .customer_pull import PullDatabases, pull_attributes, pull_databases, pull_definitions, sqlite_urls

ACME = "zuora.Workflows/acme"
BETA = "zuora.Workflows/beta"


@dataclass
class Deployment:
    """The zuora pull declared in a defs folder, its databases, the local Zuora, and two dead-lettered customers."""

    zuora: ZuoraSimulator
    acme: ZuoraTenant
    databases: PullDatabases
    defs_folder: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance

    @property
    def letters(self) -> DeadLetters:
        return DeadLetters(self.databases.log)

    def requeue(self, customer: str, *confirm: str, sync: str = "zuora") -> int:
        return main(["requeue", "--sync", sync, "--customer", customer, "--defs", str(self.defs_folder), *confirm])

    def tick(self, cursor: str | None = None) -> Tick:
        """One evaluation of the customers sensor, from `cursor`: its run requests and its next cursor."""
        sensor = self.defs.resolve_sensor_def("zuora_customers")
        repository = self.defs.get_repository_def()
        with (
            dg.partition_loading_context(dynamic_partitions_store=self.instance),  # as the sensor daemon does
            dg.build_sensor_context(
                instance=self.instance, resources=self.defs.resources, cursor=cursor, repository_def=repository
            ) as context,
        ):
            data = sensor.evaluate_tick(context)
        return Tick(list(data.run_requests or []), data.cursor)


@dataclass(frozen=True)
class Tick:
    run_requests: list[dg.RunRequest]
    cursor: str | None


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    with ZuoraSimulator() as zuora, pull_databases(sqlite_urls(tmp_path), monkeypatch) as databases:
        acme, beta = zuora.add_tenant("acme", workflows=60), zuora.add_tenant("beta", workflows=5)
        databases.add_customer("acme", acme, zuora)
        databases.add_customer("beta", beta, zuora)
        folder = tmp_path / "defs"
        (folder / "zuora").mkdir(parents=True)
        document = {"type": COMPONENT_TYPE, "attributes": pull_attributes(zuora, ["Workflows"])}
        (folder / "zuora" / "defs.yaml").write_text(yaml.safe_dump(document))
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("zuora_customers", ["acme", "beta"])
        letters = DeadLetters(databases.log)
        letters.record(ACME, "customer acme: HTTP 503 from the token endpoint", 4, "run-1")
        letters.record(BETA, "customer beta: HTTP 503", 4, "run-2")
        yield Deployment(zuora, acme, databases, folder, pull_definitions(zuora), instance)


def requeued(deployment: Deployment) -> dict[str, dt.datetime | None]:
    return {letter.entity_type: letter.requeued_at for letter in deployment.letters.listed()}


@pytest.mark.parametrize("confirm", [[], ["--confirm", "requeue beta"], ["--confirm", "yes"]])
def test_an_unconfirmed_requeue_is_refused_naming_what_to_type_and_marks_nothing(
    deployment: Deployment, confirm: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert deployment.requeue("acme", *confirm) == 2

    assert 'add --confirm "requeue acme"' in capsys.readouterr().err
    assert requeued(deployment) == {ACME: None, BETA: None}


def test_a_customer_without_a_dead_letter_is_refused(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deployment.requeue("gamma", "--confirm", "requeue gamma") == 1

    assert "customer gamma of zuora has no dead letter (zuora.Workflows/gamma)" in capsys.readouterr().err
    assert requeued(deployment) == {ACME: None, BETA: None}


def test_an_unknown_sync_is_refused_naming_the_declared_ones(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deployment.requeue("acme", "--confirm", "requeue acme", sync="zora") == 2

    error = capsys.readouterr().err
    assert "sync 'zora' is not declared under" in error and error.rstrip().endswith("declared: zuora")
    assert requeued(deployment) == {ACME: None, BETA: None}


def test_a_confirmed_requeue_marks_the_customers_dead_letter_and_the_listing_shows_it(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deployment.requeue("acme", "--confirm", "requeue acme") == 0
    assert "customer acme of zuora re-queued (1 dead letter(s))" in capsys.readouterr().out

    marks = requeued(deployment)
    assert marks[ACME] is not None and marks[BETA] is None
    assert main(["logs", "--dead-letters", "--format", "json"]) == 0
    listed = {row["entity_type"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed[ACME]["requeued_at"] == marks[ACME].isoformat() and listed[BETA]["requeued_at"] is None


def test_the_sensor_launches_one_run_per_mark_and_none_again_on_the_next_tick(deployment: Deployment) -> None:
    assert deployment.tick().run_requests == []
    deployment.requeue("acme", "--confirm", "requeue acme")

    first = deployment.tick()
    (request,) = first.run_requests
    again = deployment.tick(first.cursor)

    mark = requeued(deployment)[ACME]
    assert mark is not None
    assert (request.partition_key, request.run_key) == ("acme", f"requeue:acme:{mark.isoformat()}")
    assert request.tags[REQUEUED_TAG] == request.run_key
    assert again.run_requests == [] and again.cursor == first.cursor

    deployment.letters.requeue([ACME], at=mark + dt.timedelta(minutes=5))  # re-queued once more: one more run
    (later,) = deployment.tick(again.cursor).run_requests
    assert later.run_key == f"requeue:acme:{(mark + dt.timedelta(minutes=5)).isoformat()}"


def test_a_requeued_run_that_succeeds_removes_the_dead_letter_and_the_sensor_forgets_its_mark(
    deployment: Deployment,
) -> None:
    deployment.requeue("acme", "--confirm", "requeue acme")
    (request,) = deployment.tick().run_requests

    job = deployment.defs.resolve_job_def("zuora_sync_job")
    result = job.execute_in_process(
        instance=deployment.instance, partition_key=request.partition_key, tags=request.tags
    )

    assert result.success
    assert requeued(deployment) == {BETA: None}
    after = deployment.tick(json.dumps([request.run_key]))
    assert after.run_requests == [] and after.cursor == "[]"


def test_a_requeued_run_that_fails_again_keeps_the_dead_letter_with_its_mark_cleared(deployment: Deployment) -> None:
    deployment.requeue("acme", "--confirm", "requeue acme")

    deployment.letters.record(ACME, "customer acme: HTTP 503 again", 4, "run-3")

    (letter,) = [letter for letter in deployment.letters.listed() if letter.entity_type == ACME]
    assert (letter.attempts, letter.requeued_at, letter.run_id) == (8, None, "run-3")
    assert deployment.tick().run_requests == []


def test_a_sync_that_does_not_run_per_customer_has_nothing_to_requeue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["requeue", "--sync", "tamhr", "--customer", "acme", "--confirm", "requeue acme"]) == 2

    assert "sync tamhr does not run per customer" in capsys.readouterr().err
