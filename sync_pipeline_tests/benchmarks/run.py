"""The sync benchmark: the product's `users` sync as users run it against the lean baseline.

The product is the real user command, `dg launch --assets users` (the schedule's job restricted to
the one asset the table compares), started as its own process the way a shell with the venv
activated starts it: VIRTUAL_ENV and PATH set, SYNC_PIPELINE_SETTINGS at a settings file written
here (the packaged default with `api.base_url` at the receiver), the database URLs and the API key
in the environment, and a DAGSTER_HOME made here with the repo's dagster.yaml, so the run is
recorded like a real one (and read back from it). The baseline is a lean hand-written script.

For each row count it seeds PostgreSQL, then for each case (nothing tracked yet, every other Id
already tracked, everything tracked) runs each implementation in a fresh process against the
benchmark receiver (its own process on 127.0.0.1), and verifies every run: the receiver holds
every record exactly once, the tracking table holds every Id once in canonical form, one
SchedulerLog Success row per API call. Then, on the smallest row count, it runs the product against
a receiver taking 50 ms per call with `api.max_in_flight` 1 and 4, at the default batch size and at
a smaller one: batches in flight hide the API's latency, so their speed-up depends on how much of a
call is waiting rather than work. After each cell it times Dagster's own floor, `dg launch` of a
project whose one asset does nothing (`dagster_floor`), and prints it beside the whole-command
targets with what the product adds beyond its engine and that floor. It prints the tables and the
targets' PASS/MISS, and exits 1 if any run failed verification.

    python -m sync_pipeline_tests.benchmarks.run --rows 100000 --rows 1000000 [--repeat 3]
        [--cases empty,half,all] [--in-flight-rows N] [--in-flight-batch-sizes 3000,500]
        [--py-spy /tmp/profile.txt]

Every command runs under `launcher`, a standard-library-only process: "proc s" is from spawning the
command to its exit as the launcher sees it (what a user or the schedule waits for: interpreter
start, imports, loading the code location, the run and its records, exit); "peak RSS MB" is
`wait4`'s `ru_maxrss` of the command, its largest resident set (the launcher's ~10 MB is the floor).
"engine s" is the sync alone: for the product the engine's own `duration_seconds`, as the run
recorded it in `users`' materialization; for the baseline its connections and loop. "run s" is the
product's Dagster run from start to end, as its instance recorded it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sync_pipeline.settings import SETTINGS_ENV_VAR
from sync_pipeline.specs.tamhr import API_KEY_ENV_VAR, DATABASE_URL_ENV_VARS
from sync_pipeline_tests.benchmarks import dagster_floor, databases, product
from sync_pipeline_tests.benchmarks.databases import LogCounts, PostgresServer
from sync_pipeline_tests.benchmarks.receiver import ReceiverProcess

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ENDPOINT = "users"
API_KEY = "bench-only-key"
BATCH_SIZE = 3000  # the packaged default_settings.yaml's, which the product run uses
CASES = ("empty", "half", "all")
IMPLS = ("product", "baseline")
# Its own Log database per session: benchmarks run side by side on one server must not share tracking rows.
LOG_DATABASE = f"bench_log_{os.getpid()}"
ENGINE_RATIO_TARGET = 1.3
# (from this many rows, the whole command's product/baseline ratio at most), largest first.
WHOLE_COMMAND_TARGETS = ((1_000_000, 1.0), (100_000, 1.5))
RSS_GROWTH_TARGET_MB = 30.0
TRACKED_RSS_TARGET_MB = 30.0
LINEARITY_SLACK = 1.1  # 1M rows may take at most 11x the time of 100k
IN_FLIGHT_LIMITS = (1, 4)
IN_FLIGHT_SPEEDUP_TARGET = 3.0
IN_FLIGHT_BATCH_SIZES = (BATCH_SIZE, 500)


@dataclass
class Measurement:
    """One implementation's run on one row count and case, and what verifying it found."""

    rows: int
    case: str
    impl: str
    tracked_before: int
    engine_seconds: float
    process_seconds: float
    peak_rss_mb: float
    api_calls: int
    sent: int
    run_seconds: float | None = None
    launcher_rss_mb: float = math.nan
    max_in_flight_seen: int = 1
    batch_size: int = BATCH_SIZE
    max_in_flight: int | None = None
    latency_ms: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        """Records delivered per second of the sync alone (engine seconds)."""
        return self.sent / self.engine_seconds if self.engine_seconds else 0.0


def tracked_for_case(case: str, ids: Sequence[str]) -> Sequence[str]:
    """The Ids already tracked before a run: none, every other one in key order, or all."""
    return {"empty": [], "half": ids[::2], "all": ids}[case]


def run_child(command: Sequence[str], env: dict[str, str], log_file: Path, cwd: Path = REPO) -> dict[str, Any]:
    """Run `command` in `cwd` under `launcher` to completion, its output appended to `log_file`: the
    launcher's figures."""
    figures_file = log_file.with_suffix(".process.json")
    figures_file.unlink(missing_ok=True)
    launcher = [sys.executable, "-m", "sync_pipeline_tests.benchmarks.launcher", "--result-file", str(figures_file)]
    launcher += ["--cwd", str(cwd)]
    started = time.perf_counter()
    with log_file.open("ab") as log:
        subprocess.run(
            [*launcher, "--", *command], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if figures_file.exists():
        figures: dict[str, Any] = json.loads(figures_file.read_text(encoding="utf-8"))
        return figures
    return {"seconds": time.perf_counter() - started, "exit_code": -1, "peak_rss_mb": math.nan}


def child_command(
    impl: str, server: PostgresServer, source_db: str, base_url: str, result_file: Path, batch_size: int = BATCH_SIZE
) -> list[str]:
    """The command that runs one implementation once: `dg launch` for the product, else the baseline script."""
    if impl == "product":
        return [str(VENV_BIN / "dg"), "launch", "--assets", product.ASSET]
    return [
        sys.executable,
        "-m",
        "sync_pipeline_tests.benchmarks.baseline",
        "--result-file",
        str(result_file),
        "--source-dsn",
        server.dsn(source_db),
        "--log-dsn",
        server.dsn(LOG_DATABASE),
        "--endpoint-url",
        base_url + ENDPOINT,
        "--api-key",
        API_KEY,
        "--batch-size",
        str(batch_size),
    ]


def child_environment(
    server: PostgresServer, source_db: str, settings_file: Path, dagster_home: Path
) -> dict[str, str]:
    """A shell with the venv activated, plus the product's deployment: settings file, database URLs, API key
    and DAGSTER_HOME."""
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = sys.prefix
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONHOME", None)
    urls = {"default_db": source_db, "ess_db": source_db, "log_db": LOG_DATABASE}
    env.update({var: server.sqlalchemy_url(urls[key]) for key, var in DATABASE_URL_ENV_VARS.items()})
    env[API_KEY_ENV_VAR] = API_KEY
    env[SETTINGS_ENV_VAR] = str(settings_file)
    env["DAGSTER_HOME"] = str(dagster_home)
    return env


def make_dagster_home(path: Path) -> Path:
    """A DAGSTER_HOME as `make dagster-home` makes one: the repo's dagster.yaml in an otherwise empty folder."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", path / "dagster.yaml")
    return path


def verify(
    rows: int,
    tracked_before: int,
    outcome: dict[str, Any],
    received: dict[str, int],
    log: LogCounts,
    batch_size: int = BATCH_SIZE,
) -> list[str]:
    """Everything that must hold after a run; each broken rule as one line."""
    to_send = rows - tracked_before
    calls = math.ceil(to_send / batch_size)
    expectations = {
        "run succeeded": (outcome.get("success"), True),
        "receiver distinct Ids": (received["distinct"], rows),
        "receiver duplicates": (received["duplicates"], 0),
        "receiver non-canonical Ids": (received["non_canonical_ids"], 0),
        "receiver records this run": (received["records"], to_send),
        "API calls": (received["calls"], calls),
        "reported sent": (outcome.get("sent"), to_send),
        "tracking rows": (log.tracked, rows),
        "tracking distinct Ids": (log.tracked_distinct, rows),
        "tracking non-canonical Ids": (log.tracked_non_canonical, 0),
        "SchedulerLog Success rows": (log.log_success, calls),
        "SchedulerLog Failure rows": (log.log_failure, 0),
    }
    return [f"{name}: {got} (expected {want})" for name, (got, want) in expectations.items() if got != want]


@dataclass
class Bench:
    """One benchmark session: the server, the receiver, the product's DAGSTER_HOME, children's logs, the results."""

    server: PostgresServer
    receiver: ReceiverProcess
    workdir: Path
    dagster_home: Path
    measurements: list[Measurement] = field(default_factory=list)
    latency_ms: float = 0.0
    in_flight_runs: list[Measurement] = field(default_factory=list)
    floor_seconds: dict[tuple[int, str], float] = field(default_factory=dict)
    """(rows, case): Dagster's floor, `dg launch` of a no-op asset, timed right after that cell's runs."""

    def settings_file(self, max_in_flight: int | None, batch_size: int) -> Path:
        """The product's settings file for these knobs: the packaged defaults, sending to the receiver."""
        name = "settings" + ("" if max_in_flight is None else f"-inflight{max_in_flight}") + f"-{batch_size}.yaml"
        explicit_batch = None if batch_size == BATCH_SIZE else batch_size
        return product.write_settings_file(self.workdir / name, self.receiver.base_url, max_in_flight, explicit_batch)

    def environment(
        self, source_db: str, max_in_flight: int | None = None, batch_size: int = BATCH_SIZE
    ) -> dict[str, str]:
        """`child_environment` for this session."""
        settings = self.settings_file(max_in_flight, batch_size)
        return child_environment(self.server, source_db, settings, self.dagster_home)

    def run_once(
        self,
        rows: int,
        case: str,
        impl: str,
        source_db: str,
        tracked: Sequence[str],
        max_in_flight: int | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> Measurement:
        """Reset the Log database and the receiver to the case, run `impl` once, verify it."""
        databases.reset_log(self.server, LOG_DATABASE, tracked)
        self.receiver.reset()
        self.receiver.preload(ENDPOINT, tracked)
        name = f"{impl}-{rows}-{case}" + ("" if max_in_flight is None else f"-inflight{max_in_flight}-{batch_size}")
        result_file = self.workdir / f"{name}.json"
        result_file.unlink(missing_ok=True)
        command = child_command(impl, self.server, source_db, self.receiver.base_url, result_file, batch_size)
        log_file = self.workdir / f"{name}.log"
        launched = dt.datetime.now(dt.UTC)
        figures = run_child(command, self.environment(source_db, max_in_flight, batch_size), log_file)
        if impl == "product":
            outcome = product.recorded_outcome(self.dagster_home, launched)
        else:
            outcome = json.loads(result_file.read_text()) if result_file.exists() else {}
        received = self.receiver.stats(ENDPOINT)
        log_counts = databases.log_counts(self.server, LOG_DATABASE)
        problems = verify(rows, len(tracked), outcome, received, log_counts, batch_size)
        if figures["exit_code"] != 0:
            problems.insert(0, f"exit code {figures['exit_code']} (see {log_file})")
        return Measurement(
            rows=rows,
            case=case,
            impl=impl,
            tracked_before=len(tracked),
            engine_seconds=float(outcome.get("seconds", math.nan)),
            process_seconds=float(figures["seconds"]),
            peak_rss_mb=float(figures["peak_rss_mb"]),
            launcher_rss_mb=float(figures.get("launcher_rss_mb", math.nan)),
            api_calls=received["calls"],
            sent=received["records"],
            run_seconds=outcome.get("run_seconds"),
            max_in_flight_seen=received["max_in_flight"],
            batch_size=batch_size,
            max_in_flight=max_in_flight,
            latency_ms=self.latency_ms,
            problems=problems,
        )

    def run_floor(self, rows: int, case: str, repeat: int) -> float:
        """Time `dagster_floor`'s project under the same load as the cell just run: the median of `repeat`."""
        folder = dagster_floor.write_project(self.workdir / "dagster_floor")
        home = make_dagster_home(self.workdir / "dagster_floor_home")
        env = dagster_floor.environment(self.environment(f"bench_default_{rows}"), folder, home)
        runs = []
        for _ in range(repeat):
            figures = run_child(dagster_floor.command(str(VENV_BIN / "dg")), env, self.workdir / "floor.log", folder)
            if figures["exit_code"] != 0:
                raise SystemExit(f"Dagster's floor project failed (see {self.workdir / 'floor.log'})")
            runs.append(float(figures["seconds"]))
        self.floor_seconds[rows, case] = statistics.median(runs)
        return self.floor_seconds[rows, case]

    def run_in_flight(self, rows: int, latency_ms: float, batch_sizes: Sequence[int], repeat: int) -> None:
        """The product against a receiver taking `latency_ms` per call, per batch size and `api.max_in_flight`."""
        source_db = f"bench_default_{rows}"
        databases.ensure_source(self.server, source_db, rows)
        self.receiver.set_latency(latency_ms)
        try:
            for batch_size in batch_sizes:
                for limit in IN_FLIGHT_LIMITS:
                    runs = [
                        self.run_once(rows, "empty", "product", source_db, [], limit, batch_size) for _ in range(repeat)
                    ]
                    run = _median_run(runs)
                    run.latency_ms = latency_ms
                    self.in_flight_runs.append(run)
                    print(
                        f"{rows:>9} empty product, {latency_ms:g} ms per call, batch {batch_size}, "
                        f"max_in_flight {limit}: engine {run.engine_seconds:7.2f}s, {run.max_in_flight_seen} seen in "
                        "flight  " + ("ok" if not run.problems else "FAILED: " + "; ".join(run.problems)),
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            self.receiver.set_latency(self.latency_ms)

    def in_flight_pairs(self) -> list[tuple[Measurement, Measurement]]:
        """(1 in flight, 4 in flight) per batch size, for the speed-up."""
        single, several = IN_FLIGHT_LIMITS[0], IN_FLIGHT_LIMITS[-1]
        by_key = {(m.batch_size, m.max_in_flight): m for m in self.in_flight_runs}
        sizes = dict.fromkeys(m.batch_size for m in self.in_flight_runs)
        return [
            (by_key[size, single], by_key[size, several])
            for size in sizes
            if (size, single) in by_key and (size, several) in by_key
        ]

    def profile_product(self, rows: int, output: Path) -> None:
        """Run `dg launch` once more under py-spy (nothing tracked), writing a raw flame-graph profile."""
        py_spy = shutil.which("py-spy") or str(VENV_BIN / "py-spy")
        if not Path(py_spy).exists():
            raise SystemExit("--py-spy needs py-spy: pip install py-spy")
        source_db = f"bench_default_{rows}"
        databases.reset_log(self.server, LOG_DATABASE, [])
        self.receiver.reset()
        command = child_command("product", self.server, source_db, self.receiver.base_url, self.workdir / "unused")
        profiler = [py_spy, "record", "--idle", "--threads", "--rate", "250", "--format", "raw", "-o", str(output)]
        log_file = self.workdir / f"profile-{rows}.log"
        figures = run_child([*profiler, "--", *command], self.environment(source_db), log_file)
        print(
            f"profiled the product on {rows} rows ({figures['seconds']:.1f}s, exit {figures['exit_code']}): {output}",
            file=sys.stderr,
        )

    def run_rows(self, rows: int, cases: Sequence[str], repeat: int) -> None:
        """Seed (if needed) and run every case and implementation on `rows` rows."""
        source_db = f"bench_default_{rows}"
        started = time.perf_counter()
        if databases.ensure_source(self.server, source_db, rows):
            print(f"seeded {rows} Users into {source_db} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        ids = databases.sorted_ids(self.server, source_db) if set(cases) - {"empty"} else []
        for case in cases:
            tracked = tracked_for_case(case, ids)
            for impl in IMPLS:
                runs = [self.run_once(rows, case, impl, source_db, tracked) for _ in range(repeat)]
                chosen = _median_run(runs)
                self.measurements.append(chosen)
                status = "ok" if not chosen.problems else "FAILED: " + "; ".join(chosen.problems)
                print(
                    f"{rows:>9} {case:<5} {impl:<8} proc {chosen.process_seconds:7.2f}s engine "
                    f"{chosen.engine_seconds:7.2f}s peak RSS {chosen.peak_rss_mb:6.1f} MB  {status}",
                    file=sys.stderr,
                    flush=True,
                )
            floor = self.run_floor(rows, case, max(3, repeat))
            print(f"{rows:>9} {case:<5} Dagster's floor (dg launch of a no-op asset) {floor:7.2f}s", file=sys.stderr)

    def find(self, rows: int, case: str, impl: str) -> Measurement | None:
        """The measurement for one cell of the table, if it was run."""
        for measurement in self.measurements:
            if (measurement.rows, measurement.case, measurement.impl) == (rows, case, impl):
                return measurement
        return None


def product_version() -> str:
    """`git describe` of the checkout under test (`-dirty` with uncommitted changes), for the figures' record."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return described.stdout.strip()


def _median_run(runs: Sequence[Measurement]) -> Measurement:
    """The run with the median whole-command time; its peak RSS is the highest of all the runs."""
    chosen = sorted(runs, key=lambda run: run.process_seconds)[(len(runs) - 1) // 2]
    chosen.peak_rss_mb = max(run.peak_rss_mb for run in runs)
    chosen.problems = [problem for run in runs for problem in run.problems]
    return chosen


def _ratio(product_figure: float, baseline_figure: float) -> float:
    return product_figure / baseline_figure if baseline_figure else math.nan


COLUMNS = """\
  proc s       whole command, process start to exit (the launcher's spawn to wait4): for the product
               `dg launch --assets users` with the settings file, DAGSTER_HOME and secrets in the
               environment; for the baseline `python -m ...benchmarks.baseline`
  run s        the product's Dagster run, start to end, as its DAGSTER_HOME recorded it
  engine s     the sync alone: the product engine's duration_seconds from users' materialization;
               the baseline's connections and loop
  rec/s        records sent per engine second
  peak RSS MB  wait4's ru_maxrss of the command's process: its largest resident set (floor: the
               launcher's own ~{floor:.0f} MB)
  whole cmd    product proc s / baseline proc s;  engine: product engine s / baseline engine s
  floor        Dagster's own floor, timed after each cell (median of 3): `dg launch` of a project
               whose one asset does nothing (dagster_floor), same venv and dagster.yaml"""


def results_table(bench: Bench) -> str:
    """One line per run; the product's lines carry the product/baseline ratios, whole command and engine alone."""
    header = (
        f"{'rows':>9} {'case':<5} {'impl':<8} {'tracked':>8} {'sent':>8} {'API calls':>9} {'proc s':>7} "
        f"{'run s':>6} {'engine s':>8} {'rec/s':>8} {'peak RSS MB':>11} {'whole cmd':>9} {'engine':>7}  verified"
    )
    lines = [header, "-" * len(header)]
    for m in bench.measurements:
        ratios = ["", ""]
        baseline = bench.find(m.rows, m.case, "baseline")
        if m.impl == "product" and baseline is not None:
            ratios = [
                f"{_ratio(m.process_seconds, baseline.process_seconds):.2f}x",
                f"{_ratio(m.engine_seconds, baseline.engine_seconds):.2f}x",
            ]
        run_seconds = "" if m.run_seconds is None else f"{m.run_seconds:.2f}"
        lines.append(
            f"{m.rows:>9} {m.case:<5} {m.impl:<8} {m.tracked_before:>8} {m.sent:>8} {m.api_calls:>9} "
            f"{m.process_seconds:>7.2f} {run_seconds:>6} {m.engine_seconds:>8.2f} {m.records_per_second:>8.0f} "
            f"{m.peak_rss_mb:>11.1f} {ratios[0]:>9} {ratios[1]:>7}  {'ok' if not m.problems else 'FAILED'}"
        )
    return "\n".join(lines)


def in_flight_table(bench: Bench) -> str:
    """The product against a slow receiver at each batch size and `api.max_in_flight`, with the speed-up over 1."""
    header = (
        f"{'rows':>9} {'latency ms':>10} {'batch':>6} {'max_in_flight':>13} {'seen in flight':>14} "
        f"{'API calls':>9} {'engine s':>8} {'rec/s':>8} {'speed-up':>8}  verified"
    )
    lines = [header, "-" * len(header)]
    for pair in bench.in_flight_pairs():
        for m in pair:
            speedup = _speedup(pair[0], m)
            lines.append(
                f"{m.rows:>9} {m.latency_ms:>10g} {m.batch_size:>6} {m.max_in_flight:>13} {m.max_in_flight_seen:>14} "
                f"{m.api_calls:>9} {m.engine_seconds:>8.2f} {m.records_per_second:>8.0f} {speedup:>7.2f}x  "
                + ("ok" if not m.problems else "FAILED")
            )
    return "\n".join(lines)


def _speedup(single: Measurement, other: Measurement) -> float:
    return other.records_per_second / single.records_per_second if single.records_per_second else 0.0


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def whole_command_target(rows: int) -> float | None:
    """The whole command's largest allowed product/baseline ratio at `rows`; None below the smallest size with one."""
    return next((ratio for at_least, ratio in WHOLE_COMMAND_TARGETS if rows >= at_least), None)


def ratio_checks(bench: Bench) -> list[str]:
    """Whole command at every size with a target; the engine alone at the largest size."""
    sizes = sorted({m.rows for m in bench.measurements})
    lines: list[str] = []
    for rows in sizes:
        target = whole_command_target(rows)
        for case in ("empty", "half"):
            product_run, baseline = bench.find(rows, case, "product"), bench.find(rows, case, "baseline")
            if not (product_run and baseline):
                continue
            ratio = _ratio(product_run.process_seconds, baseline.process_seconds)
            figures = (
                f"{rows} rows, {case}, whole command: dg launch {product_run.process_seconds:.2f}s = {ratio:.2f}x "
                f"baseline process {baseline.process_seconds:.2f}s"
            )
            if target is None:
                lines.append(f"----  {figures} (no target below {WHOLE_COMMAND_TARGETS[-1][0]} rows)")
            else:
                lines.append(f"{_verdict(ratio <= target)}  {figures} (target <= {target}x)")
            floor = bench.floor_seconds.get((rows, case))
            if floor is not None:
                lines.append("      " + floor_line(floor, product_run, baseline, target))
            if rows == sizes[-1]:
                engine = _ratio(product_run.engine_seconds, baseline.engine_seconds)
                lines.append(
                    f"{_verdict(engine <= ENGINE_RATIO_TARGET)}  {rows} rows, {case}, engine alone: "
                    f"{product_run.engine_seconds:.2f}s = {engine:.2f}x baseline loop {baseline.engine_seconds:.2f}s "
                    f"(target <= {ENGINE_RATIO_TARGET}x)"
                )
    return lines


def floor_line(floor: float, product_run: Measurement, baseline: Measurement, target: float | None) -> str:
    """Dagster's floor against the baseline and the target, and what the product adds beyond its engine and
    that floor (its own imports, definitions and run-level work)."""
    floor_ratio = _ratio(floor, baseline.process_seconds)
    own = product_run.process_seconds - product_run.engine_seconds - floor
    below = target is not None and floor_ratio > target
    return (
        f"Dagster's floor (dg launch of a no-op asset) {floor:.2f}s = {floor_ratio:.2f}x the baseline"
        + ("; the target is below it: no code location launched by dg can meet it" if below else "")
        + f"; the product beyond its engine and that floor: {own:.2f}s"
    )


def target_checks(bench: Bench) -> list[str]:
    """The issue's targets on the product, with the numbers behind each verdict."""
    sizes = sorted({m.rows for m in bench.measurements})
    small, large = sizes[0], sizes[-1]
    lines = ratio_checks(bench)
    if large != small:
        allowed = LINEARITY_SLACK * large / small
        for case in CASES:
            product_small, product_large = bench.find(small, case, "product"), bench.find(large, case, "product")
            if not (product_small and product_large):
                continue
            growth = product_large.peak_rss_mb - product_small.peak_rss_mb
            lines.append(
                f"{_verdict(growth <= RSS_GROWTH_TARGET_MB)}  peak RSS of dg launch, {case}: "
                f"{product_large.peak_rss_mb:.1f} MB at {large} vs {product_small.peak_rss_mb:.1f} MB at {small}: "
                f"{growth:+.1f} MB (target <= +{RSS_GROWTH_TARGET_MB:.0f} MB)"
            )
            scale = product_large.engine_seconds / product_small.engine_seconds
            lines.append(
                f"{_verdict(scale <= allowed)}  engine time, {case}: {product_large.engine_seconds:.2f}s at {large} = "
                f"{scale:.2f}x {product_small.engine_seconds:.2f}s at {small} (target <= {allowed:.1f}x)"
            )
    for single, several in bench.in_flight_pairs():
        speedup = _speedup(single, several)
        lines.append(
            f"{_verdict(speedup >= IN_FLIGHT_SPEEDUP_TARGET)}  {several.latency_ms:g} ms per call, batch "
            f"{several.batch_size}: {several.max_in_flight} in flight {several.records_per_second:.0f} rec/s = "
            f"{speedup:.2f}x {single.max_in_flight} in flight {single.records_per_second:.0f} rec/s (target >= "
            f"{IN_FLIGHT_SPEEDUP_TARGET:g}x; receiver saw at most {several.max_in_flight_seen} at once)"
        )
    empty = bench.find(large, "empty", "product")
    for case in ("half", "all"):
        tracked = bench.find(large, case, "product")
        if empty and tracked:
            extra = tracked.peak_rss_mb - empty.peak_rss_mb
            lines.append(
                f"{_verdict(extra <= TRACKED_RSS_TARGET_MB)}  {tracked.tracked_before} Ids already tracked at "
                f"{large} rows: dg launch peak RSS {tracked.peak_rss_mb:.1f} MB vs {empty.peak_rss_mb:.1f} MB with "
                f"none: {extra:+.1f} MB (target <= +{TRACKED_RSS_TARGET_MB:.0f} MB)"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the benchmark, print the table and the targets; 1 if a run failed."""
    parser = argparse.ArgumentParser(description="Benchmark the Users sync: product vs lean baseline.")
    parser.add_argument("--rows", type=int, action="append", help="row count; repeat for several (default 100000)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the median wall time is reported")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="receiver delay per batch request")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server (databases bench_default_<rows> and bench_log are created on it)",
    )
    parser.add_argument(
        "--in-flight-rows",
        type=int,
        help="rows for api.max_in_flight 1 vs 4 against a slow receiver (default: the smallest --rows; 0: skip)",
    )
    parser.add_argument("--in-flight-latency-ms", type=float, default=50.0, help="receiver delay in that case")
    parser.add_argument(
        "--in-flight-batch-sizes",
        default=",".join(map(str, IN_FLIGHT_BATCH_SIZES)),
        help="comma-separated batch sizes for that case",
    )
    parser.add_argument(
        "--py-spy", type=Path, metavar="FILE", help="then profile the product on the smallest row count into FILE"
    )
    parser.add_argument("--workdir", type=Path, help="where children's logs and results go (default: a temp dir)")
    args = parser.parse_args(argv)
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; allowed: {', '.join(CASES)}")
    row_counts = sorted(set(args.rows or [100_000]))
    version = product_version()
    load_before = os.getloadavg()[0]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sync_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(args.pg_url)
    databases.create_log_database(server, LOG_DATABASE)
    try:
        with ReceiverProcess(latency_ms=args.latency_ms, api_key=API_KEY) as receiver:
            home = make_dagster_home(workdir / "dagster_home")
            bench = Bench(server, receiver, workdir, home, latency_ms=args.latency_ms)
            for rows in row_counts:
                bench.run_rows(rows, cases, max(1, args.repeat))
            in_flight_rows = row_counts[0] if args.in_flight_rows is None else args.in_flight_rows
            if in_flight_rows > 0:
                batch_sizes = [int(size) for size in args.in_flight_batch_sizes.split(",") if size.strip()]
                bench.run_in_flight(in_flight_rows, args.in_flight_latency_ms, batch_sizes, max(1, args.repeat))
            if args.py_spy:
                bench.profile_product(row_counts[0], args.py_spy)
    finally:
        server.drop_database(LOG_DATABASE)
    load_after = os.getloadavg()[0]
    print(
        f"\nUsers sync of sync_pipeline {version} (product: dg launch --assets {product.ASSET}), batch {BATCH_SIZE}, "
        f"receiver latency {args.latency_ms:g} ms, "
        f"{os.cpu_count()} CPUs, 1-min load average {load_before:.2f} before / {load_after:.2f} after; "
        f"tracked = Ids already tracked before the run (half = every other Id in key order)\n"
    )
    print(results_table(bench))
    floor = max((m.launcher_rss_mb for m in bench.measurements), default=math.nan)
    print(COLUMNS.format(floor=floor))
    if bench.in_flight_runs:
        print("\nThe product against a slow receiver, nothing tracked:\n")
        print(in_flight_table(bench))
    print()
    print("\n".join(target_checks(bench)))
    failed = [m for m in [*bench.measurements, *bench.in_flight_runs] if m.problems]
    for m in failed:
        print(f"\nVERIFICATION FAILED: {m.rows} {m.case} {m.impl}:\n  " + "\n  ".join(m.problems))
    if not failed and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
