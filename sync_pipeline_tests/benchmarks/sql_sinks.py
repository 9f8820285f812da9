"""Rows per second of the SQL sinks: `SqlUpsertSink.write` of new workflows, of newer ones (all updated),
of the same ones again (all skipped), then `SqlUpdateSink.write` of every row's status, in batches.

    python -m sync_pipeline_tests.benchmarks.sql_sinks [--rows 100000] [--batch 1000] [--backends postgresql,mariadb]

Each backend gets a fresh database (dropped afterwards), the sinks' test tables and the product's engine
settings (`create_sync_engine`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.sinks.sql_update import SqlUpdateSink
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.real_db.conftest import fresh_databases
from sync_pipeline_tests.sql_sink_scenarios import T0, target_metadata, workflow, workflow_sink, workflows


@contextlib.contextmanager
def target_database(backend: str) -> Iterator[sa.Engine]:
    """A fresh database with the sinks' test tables on `backend`."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{Path(stack.enter_context(tempfile.TemporaryDirectory())) / 'target.db'}"
        else:
            url = stack.enter_context(fresh_databases(backend, ["target_db"]))["target_db"]
        engine = create_sync_engine(url)
        target_metadata.create_all(engine)
        yield engine
        engine.dispose()


def rows_per_second(
    write: Callable[[Sequence[Mapping[str, Any]]], object], records: list[dict[str, Any]], batch: int
) -> float:
    """Records written per second by `write`, called once per batch."""
    started = time.perf_counter()
    for start in range(0, len(records), batch):
        write(records[start : start + batch])
    return len(records) / (time.perf_counter() - started)


def measure(backend: str, rows: int, batch: int) -> dict[str, float]:
    """Rows per second of each case, one after the other on one table."""
    figures: dict[str, float] = {}
    with target_database(backend) as engine:
        sink = workflow_sink(engine)
        figures["upsert: all new (inserted)"] = rows_per_second(sink.write, [workflow(n) for n in range(rows)], batch)
        newer = [workflow(n, T0 + dt.timedelta(minutes=1), version=2) for n in range(rows)]
        figures["upsert: all newer (updated)"] = rows_per_second(sink.write, newer, batch)
        figures["upsert: all equal (skipped)"] = rows_per_second(sink.write, newer, batch)
        status = SqlUpdateSink(engine, workflows, ["tenant", "workflow_id"], ["version"])
        changed = [{"tenant": "acme", "workflow_id": n, "version": 3} for n in range(rows)]
        figures["update of one column"] = rows_per_second(status.write, changed, batch)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--backends", default="postgresql,mariadb")
    args = parser.parse_args()
    print(f"{args.rows} rows in batches of {args.batch}")
    print(f"{'backend':<12}{'case':<32}{'rows/s':>10}")
    for backend in args.backends.split(","):
        for case, value in measure(backend, args.rows, args.batch).items():
            print(f"{backend:<12}{case:<32}{value:>10.0f}")


if __name__ == "__main__":
    main()
