"""Re-running one asset the way a data engineer would: `dg launch`, as the README documents it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync_pipeline.demo.receiver import ReceivingApi
from sync_pipeline.demo.run import DEMO_API_KEY, DEMO_ROWS, DemoPaths, environment, prepare

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[ReceivingApi, dict[str, str]]]:
    """The demo databases in tmp_path and a receiver on a free port that the settings point at."""
    with ReceivingApi(DEMO_API_KEY) as receiver:
        port = int(receiver.base_url.split(":")[2].split("/")[0])
        paths = DemoPaths(tmp_path / "demo")
        prepare(paths, port)
        env = environment(paths)
        env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
        Path(env["DAGSTER_HOME"]).mkdir()
        yield receiver, env


NOT_SHOWN = ("superseded", "will not be used", "does not match")
"""Warnings a documented command must not print in a shell set up as the README says."""


def run_cli(command: list[str], env: dict[str, str]) -> None:
    """Run a venv command from the repository root, as in a shell with the venv activated."""
    executable = str(Path(sys.executable).with_name(command[0]))

    completed = subprocess.run(
        [executable, *command[1:]],
        cwd=REPO_ROOT,
        env={**os.environ, "VIRTUAL_ENV": sys.prefix, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    assert not [warning for warning in NOT_SHOWN if warning in output], output[-3000:]


def test_dg_launch_of_actual_org_sends_only_actual_org(demo: tuple[ReceivingApi, dict[str, str]]) -> None:
    receiver, env = demo

    run_cli(["dg", "launch", "--assets", "actual_org"], env)

    assert receiver.log.received("actual-organization-structures") == DEMO_ROWS["ActualOrg"]
    assert set(receiver.log.call_sizes) == {"actual-organization-structures"}


def test_a_second_dg_launch_of_a_synced_asset_sends_nothing_again(
    demo: tuple[ReceivingApi, dict[str, str]],
) -> None:
    receiver, env = demo
    run_cli(["dg", "launch", "--assets", "actual_org"], env)
    calls_after_first = receiver.log.calls("actual-organization-structures")

    run_cli(["dg", "launch", "--assets", "actual_org"], env)

    assert calls_after_first == [3000]
    assert receiver.log.calls("actual-organization-structures") == [3000]
