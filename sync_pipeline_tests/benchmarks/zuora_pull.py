"""The Zuora pull benchmark: the product's per-customer pull against a lean hand-written pull and dlt.

One customer's workflows are pulled from a static Zuora (`zuora_pages`, its own process: every page
rendered once, so the server is not what is measured) into the local PostgreSQL with a last-write-wins
upsert on (customer_id, zuora_id), three ways, each run as its own process under `launcher`:

- product: `zuora_product`, the pull declared in YAML as the real-database test declares it (http_pages
  source with next_link pagination, state none, sql_upsert sink with its deleted column), the
  customer's row in the customers table with its Fernet-encrypted secret, `zuora_sync_job` executed for
  the customer's partition on the instance of a DAGSTER_HOME made here;
- lean: `zuora_lean`, one requests session, orjson, each page COPYed into a staging table and merged by
  `INSERT … ON CONFLICT … DO UPDATE … WHERE stored.updated_at < incoming.updated_at`;
- dlt: `zuora_dlt`, a dlt `rest_api` pipeline (OAuth2 client credentials, JSON link paginator, merge
  with the upsert strategy) run by the interpreter of its own virtualenv (`--dlt-python`).

For each record count and implementation, three runs: `first` (an empty table, the current version
of every workflow served), `unchanged` (the same pages again) and `older` (every workflow served in
an older version: updated a month earlier, another name and status). Every run is verified and the
benchmark exits 1 if any check fails: the command succeeded; the server answered one token request
and exactly ceil(records / page size) list calls, serving every record once, and refused none; the
table holds one row per workflow, each key once, the customer's, none marked deleted, and every
updated_at, name and status as the version the implementation must keep (last write wins keeps the
current one through `older`; dlt's upsert, which is not last write wins, holds what it was served
last); a first run writes every row; the product and the lean pull write no row over unchanged or
older pages; the product's and the lean pull's own count of rows written matches the database's.

    python -m sync_pipeline_tests.benchmarks.zuora_pull --records 100000 --records 1000000 [--page-size 500]
        [--impls product,lean,dlt] [--cases first,unchanged,older] [--repeat 3]
        [--dlt-python .venv-dlt/bin/python] [--before DIR] [--py-spy /tmp/profile.txt]

The implementations take turns case by case (and round by round with `--repeat`, the run with the
median whole-command time kept), so a change in the machine's load falls on all of them alike.

`--before DIR` runs the product also from the code at DIR, as `before`, in the same session:
before/after figures of a change under the same load. DIR is this checkout with an older engine:
`git archive HEAD | tar -x -C DIR && git archive COMMIT sync_pipeline | tar -x -C DIR`.
`--py-spy FILE` profiles one more first load of the product (every thread, waits included) and
prints its top costs per thread (`profile_summary`).

Columns of the table:
  proc s       whole command, process start to exit as the launcher sees it (spawn to wait4): interpreter
               start, imports, for the product building the definitions from YAML and the Dagster run
  engine s     the pull alone: for the product the engine's duration_seconds from the run's
               materialization; for the lean pull its connection to the last commit; for dlt
               `pipeline.run` (extract, normalize, load)
  cpu s        the command's own CPU seconds, user and system, every thread, as it reported them at exit:
               far less moved by the machine's other load than the wall clocks (the database's CPU is not in it)
  rec/s        records served per whole-command second
  peak RSS MB  wait4's ru_maxrss of the command's process: its largest resident set (floor: the
               launcher's own ~10 MB)
  calls        API calls the server answered: token requests + list calls
  written      rows of the table this run inserted or updated, counted by the database (rows whose
               xmin is a transaction that began after the run started), whatever the implementation says
  srv cpu s    the server's own CPU seconds during the run: how far it was from being the bottleneck
  P/L          on product lines: product proc s / lean proc s (engine: product engine s / lean engine s)
  D/P          on dlt lines: dlt proc s / product proc s
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests
import sqlalchemy as sa
from cryptography.fernet import Fernet
from psycopg import sql

from sync_pipeline.connectors.zuora.customers import SecretBox, customers_metadata, customers_table
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.demo.zuora import ZuoraSimulator, ZuoraTenant, new_credentials
from sync_pipeline.engine.tables import DateTime2
from sync_pipeline_tests.benchmarks import databases, zuora_dlt, zuora_lean, zuora_product
from sync_pipeline_tests.benchmarks.databases import PostgresServer
from sync_pipeline_tests.benchmarks.profile_summary import summary
from sync_pipeline_tests.benchmarks.run import make_dagster_home, product_version, run_child
from sync_pipeline_tests.benchmarks.zuora_pages import FIRST_WORKFLOW_ID, UPDATE_STEP, UPDATED_FROM, StaticZuoraProcess

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
IMPLS = ("product", "lean", "dlt")
BEFORE = "before"
"""The product run from another checkout's code (`--before`), beside this one's, for before/after figures."""
PRODUCTS = ("product", BEFORE)
CASES = ("first", "unchanged", "older")
SERVED = {"first": "current", "unchanged": "current", "older": "older"}
CUSTOMER = "bench"
APP_DB = f"bench_zuora_app_{os.getpid()}"
LOG_DB = f"bench_zuora_log_{os.getpid()}"
LEAN_TABLE = "lean_zuora_workflows"
DLT_DATASET = "dlt_zuora"
TABLES = {
    "product": zuora_product.TARGET_TABLE,
    BEFORE: zuora_product.TARGET_TABLE,
    "lean": LEAN_TABLE,
    "dlt": f"{DLT_DATASET}.{zuora_dlt.TABLE}",
}
PRODUCT_TO_LEAN_TARGET = 1.3
DLT_TO_PRODUCT_TARGET = 6.0
RSS_GROWTH_TARGET_MB = 30.0
PROFILE_RATE = 100
"""py-spy samples per second of each thread (waits included), when the product is profiled."""
SHAPE_PAGE_LENGTH = 50  # the simulator's largest
SHAPE_WORKFLOWS = 120


def workflows_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """The application's workflows table, as the real-database test declares it."""
    return sa.Table(
        name,
        metadata,
        sa.Column("customer_id", sa.String(100), primary_key=True),
        sa.Column("zuora_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(40), nullable=True),
        sa.Column("updated_at", DateTime2, nullable=True),
        sa.Column("deleted_at", DateTime2, nullable=True),
    )


def kept_version(impl: str, case: str) -> str:
    """The version the table must hold after `case`: the newest served, except for dlt, the last served."""
    return SERVED[case] if impl == "dlt" else "current"


@dataclass(frozen=True)
class Stored:
    """What the table holds after a run, checked against the version it must hold."""

    rows: int
    keys: int
    not_the_customers: int
    wrong_updated_at: int
    wrong_content: int
    marked_deleted: int
    written: int


def next_transaction(server: PostgresServer) -> int:
    """The id the next transaction will get (32-bit, as `xmin` shows it): rows written after now have one at least."""
    with psycopg.connect(server.dsn(APP_DB)) as conn:
        row = conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint % 4294967296").fetchone()
    assert row is not None
    return int(row[0])


def stored_state(server: PostgresServer, impl: str, records: int, version: str, since_transaction: int) -> Stored:
    """Count the table's rows, keys, and rows that differ from `version` of their workflow or were written since."""
    schema, _, name = TABLES[impl].rpartition(".")
    table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    draft = "" if version == "current" else " (draft)"
    status = "Active" if version == "current" else "Inactive"
    deleted = "count(*) FILTER (WHERE deleted_at IS NOT NULL)" if impl != "dlt" else "0"
    query = sql.SQL(
        "SELECT count(*), count(DISTINCT (customer_id, zuora_id)), "
        "count(*) FILTER (WHERE customer_id <> %(customer)s), "
        "count(*) FILTER (WHERE updated_at IS DISTINCT FROM %(first)s + (zuora_id - %(first_id)s) * %(step)s), "
        "count(*) FILTER (WHERE name IS DISTINCT FROM 'workflow ' || zuora_id || %(draft)s "
        "OR status IS DISTINCT FROM %(status)s OR zuora_id NOT BETWEEN %(first_id)s AND %(last_id)s), "
        f"{deleted}, count(*) FILTER (WHERE xmin::text::bigint >= %(since)s) FROM {{}}"
    ).format(table)
    parameters = {
        "customer": CUSTOMER,
        "first": UPDATED_FROM[version],
        "first_id": FIRST_WORKFLOW_ID,
        "last_id": FIRST_WORKFLOW_ID + records - 1,
        "step": UPDATE_STEP,
        "draft": draft,
        "status": status,
        "since": since_transaction,
    }
    with psycopg.connect(server.dsn(APP_DB)) as conn:
        conn.execute("SET TimeZone = 'UTC'")  # so a timestamp without time zone compares as the UTC it holds
        try:
            row = conn.execute(query, parameters).fetchone()
        except psycopg.errors.UndefinedTable:  # a dlt run that failed before making its table
            return Stored(0, 0, 0, 0, 0, 0, 0)
    assert row is not None
    return Stored(*(int(value) for value in row))


@dataclass
class Measurement:
    """One implementation's run on one record count and case, and what verifying it found."""

    records: int
    impl: str
    case: str
    process_seconds: float
    engine_seconds: float
    peak_rss_mb: float
    token_requests: int
    list_calls: int
    served: int
    written: int
    server_cpu_seconds: float
    cpu_seconds: float = math.nan
    problems: list[str] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        """Records served per second of the whole command."""
        return self.served / self.process_seconds if self.process_seconds else 0.0


def verify(
    impl: str,
    case: str,
    records: int,
    page_size: int,
    exit_code: int,
    outcome: dict[str, Any],
    counts: dict[str, float],
    stored: Stored,
) -> list[str]:
    """Everything that must hold after a run; each broken rule as one line."""
    expectations: dict[str, tuple[object, object]] = {
        "exit code": (exit_code, 0),
        "reported success": (outcome.get("success"), True),
        "token requests": (counts.get("token_requests", 0), 1),
        "list calls": (counts.get("list_calls", 0), math.ceil(records / page_size)),
        "records served": (counts.get("records_served", 0), records),
        "refused calls": (sum(value for key, value in counts.items() if key.startswith("http_")), 0),
        "rows": (stored.rows, records),
        "distinct keys": (stored.keys, records),
        "rows of another customer": (stored.not_the_customers, 0),
        f"updated_at not the {kept_version(impl, case)} version's": (stored.wrong_updated_at, 0),
        f"name, status or id not the {kept_version(impl, case)} version's": (stored.wrong_content, 0),
        "rows marked deleted": (stored.marked_deleted, 0),
    }
    if case == "first" or impl != "dlt":
        expectations["rows written"] = (stored.written, records if case == "first" else 0)
    reported = reported_written(impl, outcome)
    if reported is not None:
        expectations["rows written by its own count"] = (reported, stored.written)
    return [f"{name}: {got} (expected {want})" for name, (got, want) in expectations.items() if got != want]


def reported_written(impl: str, outcome: dict[str, Any]) -> int | None:
    """The rows the implementation says it wrote: the product's `sent`, the lean pull's rowcount; dlt tells none."""
    if impl in PRODUCTS:
        sent = outcome.get("metadata", {}).get("sent")
        return int(sent) if sent is not None else -1
    if impl == "lean":
        return int(outcome.get("written", -1))
    return None


def engine_seconds(impl: str, outcome: dict[str, Any]) -> float:
    """The pull alone, as the implementation timed it (the product: as its run's materialization recorded it)."""
    if impl in PRODUCTS:
        return float(outcome.get("metadata", {}).get("duration_seconds", math.nan))
    return float(outcome.get("seconds", math.nan))


@dataclass
class PullBench:
    """One benchmark session: the server, the databases, the customer, the children's folders, the results."""

    server: PostgresServer
    zuora: StaticZuoraProcess
    client: ZuoraTenant
    fernet_key: str
    workdir: Path
    dagster_home: Path
    dlt_python: Path
    page_size: int
    before: Path | None = None
    """Another checkout whose product code runs as `before` (same virtualenv)."""
    measurements: list[Measurement] = field(default_factory=list)

    def command(self, impl: str, result_file: Path, pipelines_dir: Path) -> list[str]:
        """The command that runs `impl` once."""
        common = ["--customer", CUSTOMER, "--page-size", str(self.page_size), "--result-file", str(result_file)]
        if impl in PRODUCTS:
            # -P: the module is found on PYTHONPATH (the other checkout, for `before`), not in the working folder.
            module = [sys.executable, "-P", "-m", zuora_product.__name__, "--simulator", self.zuora.host_port]
            return [*module, *common]
        if impl == "lean":
            return [
                sys.executable,
                "-m",
                zuora_lean.__name__,
                "--dsn",
                self.server.dsn(APP_DB),
                "--table",
                LEAN_TABLE,
                *common,
            ]
        return [
            str(self.dlt_python),
            "-m",
            zuora_dlt.__name__,
            "--base-url",
            self.zuora.base_url,
            "--dsn",
            with_password(self.server.dsn(APP_DB)),
            "--dataset",
            DLT_DATASET,
            "--pipelines-dir",
            str(pipelines_dir),
            *common,
        ]

    def environment(self, impl: str) -> dict[str, str]:
        """A shell with the implementation's virtualenv activated, plus what a deployment of it is given."""
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        venv = self.dlt_python.parent.parent if impl == "dlt" else Path(sys.prefix)
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        if impl == "dlt":
            env[zuora_dlt.CLIENT_ID_ENV_VAR] = self.client.client_id
            env[zuora_dlt.CLIENT_SECRET_ENV_VAR] = self.client.client_secret
            env["RUNTIME__DLTHUB_TELEMETRY"] = "false"  # no calls home from the benchmark
            return env
        env[zuora_product.SECRET_KEY_ENV_VAR] = self.fernet_key
        env[zuora_product.APP_DB_ENV_VAR] = self.server.sqlalchemy_url(APP_DB)
        env[zuora_product.LOG_DB_ENV_VAR] = self.server.sqlalchemy_url(LOG_DB)
        env["DAGSTER_HOME"] = str(self.dagster_home)
        env["PYTHONPATH"] = str(self.before if impl == BEFORE and self.before else REPO)
        return env

    def empty_target(self, impl: str, pipelines_dir: Path) -> None:
        """Before a first run: the implementation's table empty (dlt's dataset and working folder gone)."""
        with psycopg.connect(self.server.dsn(APP_DB), autocommit=True) as conn:
            if impl == "dlt":
                for schema in (DLT_DATASET, f"{DLT_DATASET}_staging"):
                    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            else:
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(TABLES[impl])))
        shutil.rmtree(pipelines_dir, ignore_errors=True)

    def settle(self, impl: str, case: str) -> None:
        """Every run starts alike: the Log database emptied, the target vacuumed and analyzed, a checkpoint."""
        databases.reset_log(self.server, LOG_DB, [])
        with psycopg.connect(self.server.dsn(APP_DB), autocommit=True) as conn:
            if impl != "dlt" or case != "first":
                schema, _, name = TABLES[impl].rpartition(".")
                table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
            conn.execute("CHECKPOINT")

    def run_once(self, records: int, impl: str, case: str, profile: Path | None = None) -> Measurement:
        """Serve the case's version, run `impl` once (under py-spy with `profile`), verify it."""
        name = f"{impl}-{records}-{case}" + ("-profiled" if profile else "")
        pipelines_dir = self.workdir / f"dlt-{records}"
        if case == "first":
            self.empty_target(impl, pipelines_dir)
        rendered = self.zuora.serve(self.client, records, self.page_size, SERVED[case])
        if rendered["seconds"] > 1:
            print(f"rendered {rendered['pages']} {SERVED[case]} pages in {rendered['seconds']:.1f}s", file=sys.stderr)
        self.settle(impl, case)
        self.zuora.reset()
        result_file = self.workdir / f"{name}.json"
        result_file.unlink(missing_ok=True)
        command = self.command(impl, result_file, pipelines_dir)
        if profile is not None:
            py_spy = shutil.which("py-spy", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}") or "py-spy"
            rate = str(PROFILE_RATE)
            recorder = [py_spy, "record", "--threads", "--idle", "--rate", rate, "--format", "raw", "-o", str(profile)]
            command = [*recorder, "--", *command]
        cpu_before = self.zuora.stats()["cpu_seconds"]
        since = next_transaction(self.server)
        figures = run_child(command, self.environment(impl), self.workdir / f"{name}.log")
        counts = self.zuora.stats()
        outcome: dict[str, Any] = json.loads(result_file.read_text()) if result_file.exists() else {}
        stored = stored_state(self.server, impl, records, kept_version(impl, case), since)
        problems = verify(impl, case, records, self.page_size, figures["exit_code"], outcome, counts, stored)
        if figures["exit_code"] != 0:
            problems.append(f"see {self.workdir / f'{name}.log'}")
        return Measurement(
            records=records,
            impl=impl,
            case=case,
            process_seconds=float(figures["seconds"]),
            engine_seconds=engine_seconds(impl, outcome),
            peak_rss_mb=float(figures["peak_rss_mb"]),
            token_requests=int(counts.get("token_requests", 0)),
            list_calls=int(counts.get("list_calls", 0)),
            served=int(counts.get("records_served", 0)),
            written=stored.written,
            server_cpu_seconds=float(counts["cpu_seconds"]) - float(cpu_before),
            cpu_seconds=float(outcome.get("cpu_seconds", math.nan)),
            problems=problems,
        )

    def run_records(self, records: int, impls: Sequence[str], cases: Sequence[str] = CASES, repeat: int = 1) -> None:
        """Every implementation's runs on `records` workflows, case by case, the implementations taking turns
        (`repeat` rounds, the median kept) so that a change in the machine's load falls on all of them alike."""
        for case in cases:
            runs: dict[str, list[Measurement]] = {impl: [] for impl in impls}
            for _ in range(repeat):
                for impl in impls:
                    measurement = self.run_once(records, impl, case)
                    runs[impl].append(measurement)
                    status = "ok" if not measurement.problems else "FAILED: " + "; ".join(measurement.problems)
                    print(
                        f"{records:>9} {impl:<7} {case:<9} proc {measurement.process_seconds:7.2f}s engine "
                        f"{measurement.engine_seconds:7.2f}s peak RSS {measurement.peak_rss_mb:6.1f} MB written "
                        f"{measurement.written:>8}  {status}",
                        file=sys.stderr,
                        flush=True,
                    )
            self.measurements += [median_run(runs[impl]) for impl in impls]

    def find(self, records: int, impl: str, case: str) -> Measurement | None:
        """The measurement of one cell of the table, if it was run."""
        for m in self.measurements:
            if (m.records, m.impl, m.case) == (records, impl, case):
                return m
        return None


def median_run(runs: Sequence[Measurement]) -> Measurement:
    """The run with the median whole-command time, with the highest peak RSS of all and every run's problems."""
    chosen = sorted(runs, key=lambda run: run.process_seconds)[(len(runs) - 1) // 2]
    chosen.peak_rss_mb = max(run.peak_rss_mb for run in runs)
    chosen.problems = [problem for run in runs for problem in run.problems]
    return chosen


def with_password(dsn: str) -> str:
    """`dsn` with a password if it has none: dlt refuses PostgreSQL credentials without one, even under trust."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.password is not None or parts.username is None:
        return dsn
    netloc = f"{parts.username}:unused-under-trust@{parts.netloc.rpartition('@')[2]}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def results_table(bench: PullBench) -> str:
    """One line per run; product lines carry P/L (whole command, engine), dlt lines D/P."""
    header = (
        f"{'records':>9} {'impl':<7} {'case':<9} {'proc s':>7} {'engine s':>8} {'cpu s':>7} {'rec/s':>8} "
        f"{'peak RSS MB':>11} {'calls':>7} {'written':>8} {'srv cpu s':>9} {'P/L':>6} {'P/L eng':>7} {'D/P':>6}"
        "  verified"
    )
    lines = [header, "-" * len(header)]
    for m in bench.measurements:
        lean, product = bench.find(m.records, "lean", m.case), bench.find(m.records, "product", m.case)
        p_l = p_l_engine = d_p = ""
        if m.impl in PRODUCTS and lean is not None:
            p_l = f"{_ratio(m.process_seconds, lean.process_seconds):.2f}x"
            p_l_engine = f"{_ratio(m.engine_seconds, lean.engine_seconds):.2f}x"
        if m.impl == "dlt" and product is not None:
            d_p = f"{_ratio(m.process_seconds, product.process_seconds):.2f}x"
        lines.append(
            f"{m.records:>9} {m.impl:<7} {m.case:<9} {m.process_seconds:>7.2f} {m.engine_seconds:>8.2f} "
            f"{m.cpu_seconds:>7.2f} "
            f"{m.records_per_second:>8.0f} {m.peak_rss_mb:>11.1f} {m.token_requests + m.list_calls:>7} "
            f"{m.written:>8} {m.server_cpu_seconds:>9.2f} {p_l:>6} {p_l_engine:>7} {d_p:>6}  "
            + ("ok" if not m.problems else "FAILED")
        )
    return "\n".join(lines)


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def target_checks(bench: PullBench) -> list[str]:
    """The issue's targets, on the first load of the largest record count, with the figures behind each verdict."""
    sizes = sorted({m.records for m in bench.measurements})
    if not sizes:
        return []
    lines: list[str] = []
    large = sizes[-1]
    product, lean, dlt = (bench.find(large, impl, "first") for impl in IMPLS)
    if product and lean:
        ratio = _ratio(product.process_seconds, lean.process_seconds)
        engine = _ratio(product.engine_seconds, lean.engine_seconds)
        lines.append(
            f"{_verdict(ratio <= PRODUCT_TO_LEAN_TARGET)}  {large} records, first load: product "
            f"{product.process_seconds:.2f}s = {ratio:.2f}x lean {lean.process_seconds:.2f}s "
            f"(target <= {PRODUCT_TO_LEAN_TARGET}x; engine alone "
            f"{product.engine_seconds:.2f}s = {engine:.2f}x the lean loop {lean.engine_seconds:.2f}s)"
        )
    if product and dlt:
        ratio = _ratio(dlt.process_seconds, product.process_seconds)
        lines.append(
            f"{_verdict(ratio >= DLT_TO_PRODUCT_TARGET)}  {large} records, first load: dlt "
            f"{dlt.process_seconds:.2f}s = {ratio:.2f}x product {product.process_seconds:.2f}s "
            f"(target >= {DLT_TO_PRODUCT_TARGET:g}x)"
        )
    small_product = bench.find(sizes[0], "product", "first")
    if product and small_product and large != sizes[0]:
        growth = product.peak_rss_mb - small_product.peak_rss_mb
        lines.append(
            f"{_verdict(growth <= RSS_GROWTH_TARGET_MB)}  product peak RSS, first load: "
            f"{product.peak_rss_mb:.1f} MB at {large} vs {small_product.peak_rss_mb:.1f} MB at {sizes[0]}: "
            f"{growth:+.1f} MB (target <= "
            f"+{RSS_GROWTH_TARGET_MB:.0f} MB: memory flat in N)"
        )
    for case in ("unchanged", "older"):
        runs = [m for m in bench.measurements if m.impl == "product" and m.case == case]
        if runs:
            written = ", ".join(f"{m.written} at {m.records}" for m in runs)
            lines.append(
                f"{_verdict(all(m.written == 0 for m in runs))}  product over {case} pages: rows written {written} "
                "(target 0)"
            )
    why = {"unchanged": "its upsert updates every row it loads", "older": "its upsert is not last write wins"}
    for m in bench.measurements:
        if m.impl == "dlt" and m.case in why:
            lines.append(f"----  dlt over {m.case} pages at {m.records}: {m.written} rows written ({why[m.case]})")
    return lines


def shape_problems(zuora: StaticZuoraProcess, client: ZuoraTenant) -> list[str]:
    """Differences between the static pages and the simulator's answers (JSON shape, link form), if any."""
    problems: list[str] = []
    with ZuoraSimulator() as simulator, requests.Session() as http:
        tenant = simulator.add_tenant("shape", workflows=SHAPE_WORKFLOWS)
        zuora.serve(client, SHAPE_WORKFLOWS, SHAPE_PAGE_LENGTH, "current")
        servers = (
            ("simulator", simulator.token_url, simulator.base_url.removesuffix("/v1"), tenant),
            ("static", zuora.base_url + "/oauth/token", zuora.base_url, client),
        )
        answers: dict[str, list[Any]] = {}
        for label, token_url, root, credentials in servers:
            form = {"grant_type": "client_credentials", "client_id": credentials.client_id}
            token = http.post(token_url, data={**form, "client_secret": credentials.client_secret}, timeout=30).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            pages = []
            for page in (1, 3, 4):
                url = f"{root}/v1/workflows?page={page}&page_length={SHAPE_PAGE_LENGTH}"
                pages.append(http.get(url, headers=headers, timeout=30).json())
            answers[label] = [_shape(answer) for answer in pages] + [
                (answer["pagination"]["next_page"] or "").replace(root, "") for answer in pages
            ]
    if answers["simulator"] != answers["static"]:
        problems.append(f"static pages differ from the simulator's: {answers['static']} vs {answers['simulator']}")
    zuora.reset()
    return problems


def _shape(value: object) -> object:
    """A JSON value's shape: objects' keys (in order) and their shapes, a list's items' shapes, scalars' types."""
    if isinstance(value, dict):
        return [(key, _shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return sorted({json.dumps(_shape(item)) for item in value})
    return type(value).__name__


def declaration_problems() -> list[str]:
    """Whether the benchmark's page size can still be set in the real-database test's declaration."""
    if "{page_size}" not in zuora_product.PULL_YAML:
        return [f"real_db/customer_pull.py DEFS_YAML no longer says {zuora_product.DECLARED_PAGE_SIZE!r}"]
    return []


def create_databases(server: PostgresServer, client: ZuoraTenant, fernet_key: str, base_url: str) -> None:
    """The application's database (customers table with the one customer, the workflows tables) and the Log one."""
    server.recreate_database(LOG_DB)
    server.recreate_database(APP_DB)
    log = sa.create_engine(server.sqlalchemy_url(LOG_DB))
    create_log_tables(log)
    log.dispose()
    app = sa.create_engine(server.sqlalchemy_url(APP_DB))
    customers_metadata.create_all(app)
    metadata = sa.MetaData()
    for name in (zuora_product.TARGET_TABLE, LEAN_TABLE):
        workflows_table(name, metadata)
    metadata.create_all(app)
    box = SecretBox(fernet_key, zuora_product.SECRET_KEY_ENV_VAR)
    row = {
        "CustomerId": CUSTOMER,
        "Name": "Benchmark customer",
        "ClientId": client.client_id,
        "ClientSecretEncrypted": box.encrypt(client.client_secret),
        "BaseUrl": base_url,
        "Active": True,
        "ModifiedOn": dt.datetime(2026, 12, 1),
    }
    with app.begin() as conn:
        conn.execute(sa.insert(customers_table), [row])
    app.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the benchmark, print the table and the targets; 1 if a run failed verification."""
    parser = argparse.ArgumentParser(description="Benchmark the Zuora workflows pull: product vs lean vs dlt.")
    parser.add_argument(
        "--records", type=int, action="append", help="workflows served; repeat for several (default 100000)"
    )
    parser.add_argument("--page-size", type=int, default=500, help="page_length asked of the server")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {','.join(IMPLS)}")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every run; the median whole command is kept")
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also run the product from the code at DIR (same virtualenv; `git archive COMMIT | tar -x -C DIR`), "
        "as `before`, ahead of this checkout's: before/after figures from one run",
    )
    parser.add_argument(
        "--dlt-python", type=Path, default=REPO / ".venv-dlt/bin/python", help="dlt's virtualenv's python"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432"),
        help="PostgreSQL server (databases bench_zuora_app_<pid> and bench_zuora_log_<pid> are made on it)",
    )
    parser.add_argument(
        "--py-spy", type=Path, metavar="FILE", help="then profile the product's first load on the smallest --records"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where children's logs and results go (default: a temp dir, kept on failure)"
    )
    args = parser.parse_args(argv)
    impls = [impl.strip() for impl in args.impls.split(",") if impl.strip()]
    if unknown := sorted(set(impls) - set(IMPLS)):
        parser.error(f"--impls: unknown {', '.join(unknown)}; allowed: {', '.join(IMPLS)}")
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    if set(cases) - set(CASES) or cases[:1] != ["first"]:
        parser.error(f"--cases: {args.cases!r}: a subset of {', '.join(CASES)}, first among them")
    if args.before is not None:
        if not (args.before / zuora_product.__name__.replace(".", "/")).with_suffix(".py").exists():
            parser.error(f"--before: {args.before} has no {zuora_product.__name__}")
        impls.insert(0, BEFORE)
    if args.py_spy and not (shutil.which("py-spy") or (VENV_BIN / "py-spy").exists()):
        parser.error("--py-spy needs py-spy: pip install py-spy")
    if "dlt" in impls and not args.dlt_python.exists():
        parser.error(f"--dlt-python: {args.dlt_python} does not exist (make bench-pull builds .venv-dlt)")
    record_counts = sorted(set(args.records or [100_000]))
    version = product_version()
    load_before = os.getloadavg()[0]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="zuora_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(args.pg_url)
    client = new_credentials("bench")
    fernet_key = Fernet.generate_key().decode()
    problems = declaration_problems()
    try:
        with StaticZuoraProcess() as zuora:
            problems += shape_problems(zuora, client)
            create_databases(server, client, fernet_key, zuora.base_url)
            home = make_dagster_home(workdir / "dagster_home")
            bench = PullBench(
                server, zuora, client, fernet_key, workdir, home, args.dlt_python, args.page_size, args.before
            )
            for records in record_counts:
                bench.run_records(records, impls, cases, max(1, args.repeat))
            if args.py_spy:
                profiled = bench.run_once(record_counts[0], "product", "first", profile=args.py_spy)
                print(f"profiled run: proc {profiled.process_seconds:.2f}s", file=sys.stderr)
    finally:
        server.drop_database(APP_DB)
        server.drop_database(LOG_DB)
    load_after = os.getloadavg()[0]
    dlt_version = _dlt_version(args.dlt_python) if "dlt" in impls else "not run"
    print(
        f"\nZuora workflows pull of sync_pipeline {version}, page size {args.page_size}, dlt {dlt_version}, "
        f"{os.cpu_count()} CPUs, 1-min load average {load_before:.2f} before / {load_after:.2f} after"
        + (f"; before = the product's code at {args.before}" if args.before else "")
        + "\n"
    )
    print(results_table(bench))
    print(__doc__[__doc__.index("Columns of the table:") :].rstrip())
    print()
    print("\n".join(target_checks(bench)))
    if args.py_spy:
        profile = summary(args.py_spy, PROFILE_RATE)
        print(f"\nProfile of the product's first load of {record_counts[0]} records:\n{profile}")
    failed = [m for m in bench.measurements if m.problems]
    for problem in problems:
        print(f"\nVERIFICATION FAILED: {problem}")
    for m in failed:
        print(f"\nVERIFICATION FAILED: {m.records} {m.impl} {m.case}:\n  " + "\n  ".join(m.problems))
    if not failed and not problems and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed or problems else 0


def _dlt_version(python: Path) -> str:
    completed = subprocess.run(
        [str(python), "-c", "import dlt; print(dlt.__version__)"], capture_output=True, text=True, check=False
    )
    return completed.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
