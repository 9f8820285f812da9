"""Start-up benchmark: how long a user waits for a run that has nothing to send, process start to exit.

It prepares the demo databases in a temporary folder with one `sync-pipeline demo` run (so every
record is tracked), empties the Users source table, and then times, as whole processes run the way
people and the schedule's CLI equivalents run them:

- `dg launch --job tamhr_sync_job`: the whole job, nothing to send;
- `dg launch --assets users`: one asset whose source has 0 rows;
- Dagster's floor: the same command on a project whose one asset does nothing (`dagster_floor`),
  what any code location launched by dg pays before its own imports and work.

    python -m sync_pipeline_tests.benchmarks.startup [--repeat 5] [--repo PATH]

`--repo` is the checkout whose `.venv` is timed (default: this one), so a second checkout of an
older commit gives the figures before a change in the same session. Medians are printed with the
targets (whole job <= 6 s, one asset <= 2.5 s on this machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sync_pipeline_tests.benchmarks import dagster_floor

WHOLE_JOB_TARGET_SECONDS = 6.0
ONE_ASSET_TARGET_SECONDS = 2.5
REPO = Path(__file__).resolve().parents[2]


def demo_environment(repo: Path, workdir: Path) -> dict[str, str]:
    """The environment `sync-pipeline env` prints for the demo in `workdir`, as a dict."""
    printed = subprocess.run(
        [str(repo / ".venv/bin/sync-pipeline"), "env", "--workdir", str(workdir / "demo")],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env: dict[str, str] = {}
    for line in printed.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    return env


def timed(command: Sequence[str], cwd: Path, env: dict[str, str]) -> float:
    """Seconds from starting the command's process (in `cwd`) to its exit; it must succeed."""
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare, time each command `--repeat` times, print medians against the targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command; the median is reported")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose .venv is timed")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="sync_startup_"))
    try:
        home = workdir / "dagster_home"
        home.mkdir()
        shutil.copy(repo / "dagster.yaml", home / "dagster.yaml")
        env = {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": str(repo / ".venv")}
        env["PATH"] = f"{repo / '.venv/bin'}{os.pathsep}{env.get('PATH', '')}"
        sync_pipeline = str(repo / ".venv/bin/sync-pipeline")
        timed([sync_pipeline, "demo", "--workdir", str(workdir / "demo"), "--port", "18799"], repo, env)
        env.update(demo_environment(repo, workdir))
        with sqlite3.connect(workdir / "demo" / "default.db") as conn:
            conn.execute("DELETE FROM TB_M_USER")
        dg = str(repo / ".venv/bin/dg")
        floor_project = dagster_floor.write_project(workdir / "dagster_floor")
        floor_home = workdir / "dagster_floor_home"
        floor_home.mkdir()
        shutil.copy(repo / "dagster.yaml", floor_home / "dagster.yaml")
        floor_env = dagster_floor.environment(env, floor_project, floor_home)
        commands = {
            "whole job, nothing to send": (
                [dg, "launch", "--job", "tamhr_sync_job"],
                repo,
                env,
                WHOLE_JOB_TARGET_SECONDS,
            ),
            "one asset, 0 rows": ([dg, "launch", "--assets", "users"], repo, env, ONE_ASSET_TARGET_SECONDS),
            "Dagster's floor (no-op asset)": (dagster_floor.command(dg), floor_project, floor_env, None),
        }
        print(f"start-up of {repo} ({args.repeat} runs each, process start to exit)")
        print(f"{'command':<30} {'median s':>9} {'min s':>7} {'max s':>7} {'target s':>9}  verdict")
        for label, (command, cwd, command_env, target) in commands.items():
            runs = [timed(command, cwd, command_env) for _ in range(args.repeat)]
            median = statistics.median(runs)
            if target is None:
                print(f"{label:<30} {median:>9.2f} {min(runs):>7.2f} {max(runs):>7.2f} {'':>9}  ----")
                continue
            verdict = "PASS" if median <= target else f"MISS by {median - target:.2f} s"
            print(f"{label:<30} {median:>9.2f} {min(runs):>7.2f} {max(runs):>7.2f} {target:>9.1f}  {verdict}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
