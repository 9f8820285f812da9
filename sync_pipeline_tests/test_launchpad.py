"""The Dagster UI as people use it: `sync-pipeline ui` (what `make ui` runs), then the launchpad.

The launchpad pre-fills each run's config from the definitions. This test takes exactly that
config from the webserver (GraphQL `rootDefaultYaml`, what the launchpad shows) and launches it
as shown, for one asset and for the dry-run job, against a real receiver: both runs must succeed,
and no secret may be in what the launchpad shows. Then Ctrl-C must stop everything cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from sync_pipeline.demo.run import DEMO_API_KEY, DEMO_ROWS, DemoPaths, environment
from sync_pipeline.orchestration.sync_assets import DRY_RUN_TAG
from sync_pipeline.specs.tamhr import TAMHR_SYNC

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = "sync_pipeline"
ASSET_JOB = "__ASSET_JOB"

DEFAULT_CONFIG = """
query ($selector: PipelineSelector!) {
  runConfigSchemaOrError(selector: $selector) { ... on RunConfigSchema { rootDefaultYaml } }
}"""
LAUNCH = """
mutation ($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
RUN = """
query ($runId: ID!) { runOrError(runId: $runId) { ... on Run { status tags { key value } } } }"""
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class RunningUi:
    """The `sync-pipeline ui` process and where its webserver answers."""

    process: subprocess.Popen[str]
    graphql_url: str
    secrets: list[str]

    def ask(self, query: str, **variables: Any) -> dict[str, Any]:
        response = requests.post(self.graphql_url, json={"query": query, "variables": variables}, timeout=60)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[RunningUi]:
    """`sync-pipeline ui` on free ports, with the demo databases in tmp_path, until the test ends."""
    paths = DemoPaths(tmp_path / "demo")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    ui_port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    command = [str(Path(sys.executable).with_name("sync-pipeline")), "ui", "--workdir", str(paths.workdir)]
    process = subprocess.Popen(
        [*command, "--port", str(free_port()), "--ui-port", str(ui_port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job has
    )
    running = RunningUi(process, f"http://127.0.0.1:{ui_port}/graphql", [])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if running.ask(LOCATIONS)["workspaceOrError"]["locationEntries"]:
                break
        except requests.RequestException:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
        time.sleep(1)
    running.secrets = [value for name, value in environment(paths).items() if name.endswith("_URL")]
    running.secrets.append(DEMO_API_KEY)
    yield running
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def scaffolded_config(ui: RunningUi, job: str, assets: list[str] | None = None) -> str:
    """The run config the launchpad pre-fills for `job` (and an asset selection), as YAML text."""
    selector: dict[str, Any] = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
    selector["pipelineName"] = job
    if assets:
        selector["assetSelection"] = [{"path": [name]} for name in assets]
    text: str = ui.ask(DEFAULT_CONFIG, selector=selector)["runConfigSchemaOrError"]["rootDefaultYaml"]
    return text


def launch_as_shown(ui: RunningUi, job: str, config_yaml: str, assets: list[str] | None = None) -> dict[str, Any]:
    """Launch the config exactly as the launchpad showed it and wait for the run to finish."""
    selector: dict[str, Any] = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
    selector["pipelineName"] = job
    if assets:
        selector["assetSelection"] = [{"path": [name]} for name in assets]
    params = {"selector": selector, "runConfigData": yaml.safe_load(config_yaml), "mode": "default"}
    launched = ui.ask(LAUNCH, params=params)["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run: dict[str, Any] = ui.ask(RUN, runId=run_id)["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish in time")


def test_the_launchpad_shows_no_secret_and_launches_as_shown_and_ctrl_c_stops_everything(ui: RunningUi) -> None:
    assert [entry["name"] for entry in ui.ask(LOCATIONS)["workspaceOrError"]["locationEntries"]] == [LOCATION]
    users_config = scaffolded_config(ui, ASSET_JOB, ["users"])
    dry_run_config = scaffolded_config(ui, TAMHR_SYNC.dry_run_job_name)

    for shown in (users_config, dry_run_config):
        assert "*" not in shown and "env: SYNC_DEFAULT_DB_URL" in shown
        assert not any(secret in shown for secret in ui.secrets)
    dry_run = launch_as_shown(ui, TAMHR_SYNC.dry_run_job_name, dry_run_config)
    users = launch_as_shown(ui, ASSET_JOB, users_config, ["users"])

    assert dry_run["status"] == "SUCCESS"
    assert {"key": DRY_RUN_TAG, "value": "true"} in dry_run["tags"]
    assert users["status"] == "SUCCESS", f"users sends its {DEMO_ROWS['Users']} rows"
    os.killpg(ui.process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    output, _ = ui.process.communicate(timeout=60)
    assert ui.process.returncode == 130
    assert "Traceback" not in output
    assert not [warning for warning in ("superseded", "will not be used", "does not match") if warning in output]
    assert processes_in_group(ui.process.pid, wait_seconds=15) == "", "no process of the UI is left behind"


def processes_in_group(group: int, wait_seconds: float) -> str:
    """`ps` lines of the processes still in the group, once it is empty or the wait is over."""
    deadline = time.monotonic() + wait_seconds
    while True:
        found = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not found:
        return ""
    return subprocess.run(["ps", "-o", "pid,args", "-p", ",".join(found)], capture_output=True, text=True).stdout
