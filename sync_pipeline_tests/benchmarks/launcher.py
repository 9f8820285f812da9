"""Run one command as a whole process and report what it cost: seconds from spawn to exit, and peak RSS.

    python -m sync_pipeline_tests.benchmarks.launcher --result-file out.json [--cwd DIR] -- dg launch --assets users

The peak is `wait4`'s `ru_maxrss` of the command: the largest resident set of the command's process
(or of any of its children). On Linux that figure also counts the address space the command was
exec'd from, which is this launcher's, so it imports only the standard library and stays at ~10 MB
(it reports its own VmHWM as `launcher_rss_mb`, the floor of every figure); started straight from
the benchmark runner, every child would report at least the runner's hundreds of MB.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from sync_pipeline_tests.benchmarks.process_memory import peak_rss_mb


def run_command(command: Sequence[str]) -> dict[str, float | int]:
    """Spawn `command` (found on PATH), wait for it: seconds, exit code, its peak RSS and this launcher's, MiB."""
    started = time.perf_counter()
    pid = os.posix_spawnp(command[0], list(command), os.environ)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "exit_code": os.waitstatus_to_exitcode(status),
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "launcher_rss_mb": peak_rss_mb(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command after `--`, write the figures to `--result-file`, exit with the command's code."""
    parser = argparse.ArgumentParser(description="Time one command from spawn to exit; report its peak RSS.")
    parser.add_argument("--result-file", type=Path, required=True, help="write the figures here as JSON")
    parser.add_argument("--cwd", type=Path, help="run the command in this folder (default: the launcher's own)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    if args.cwd is not None:
        os.chdir(args.cwd)  # after this module is imported from the repo, before the command starts
    figures = run_command(command)
    args.result_file.write_text(json.dumps(figures), encoding="utf-8")
    return int(figures["exit_code"])


if __name__ == "__main__":
    raise SystemExit(main())
