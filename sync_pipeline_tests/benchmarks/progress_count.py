"""What the progress total costs a run: the source's `COUNT(*)` and the entity's tracked count, on PostgreSQL.

A run with progress on (`progress.interval_seconds` > 0) makes both counts once, before its first
page. This seeds databases of its own (never the `make bench` ones; both dropped at the end), half
of the rows tracked, and prints each count's time: the first and the median of the rest.

    python -m sync_pipeline_tests.benchmarks.progress_count [--rows 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from sync_pipeline.engine.audit.scheduler_log import SchedulerLogWriter
from sync_pipeline.engine.progress import count_candidates
from sync_pipeline.engine.sources.sql_table import count_rows
from sync_pipeline.engine.state.selection import SEND_UNTRACKED
from sync_pipeline.engine.state.tracking import TrackingStore
from sync_pipeline.engine.tables import source_table
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME
from sync_pipeline_tests.benchmarks import databases
from sync_pipeline_tests.benchmarks.databases import ENTITY, PostgresServer

SERVER = "postgresql://postgres@127.0.0.1:5432"


def timings(count: Callable[[], int], repeat: int) -> tuple[int, float, float]:
    """The count, its first time and the median of `repeat` more, in seconds."""
    started = time.perf_counter()
    value = count()
    first = time.perf_counter() - started
    rest = []
    for _ in range(repeat):
        started = time.perf_counter()
        count()
        rest.append(time.perf_counter() - started)
    return value, first, statistics.median(rest)


def main(argv: Sequence[str] | None = None) -> int:
    """Seed, time both counts and the candidate count as a run makes it, print, drop the databases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    server = PostgresServer(SERVER)
    source_db, log_db = f"progress_count_source_{args.rows}", f"progress_count_log_{os.getpid()}"
    databases.ensure_source(server, source_db, args.rows)
    databases.create_log_database(server, log_db)
    databases.reset_log(server, log_db, databases.sorted_ids(server, source_db)[::2])
    source = create_sync_engine(server.sqlalchemy_url(source_db))
    tracking = TrackingStore(create_sync_engine(server.sqlalchemy_url(log_db)), SchedulerLogWriter({}))
    table = source_table(ENTITIES_BY_NAME[ENTITY], databases.users_settings(), sa.MetaData())
    log = logging.getLogger("progress_count")
    try:
        cases: dict[str, Callable[[], int]] = {
            "source COUNT(*)": lambda: count_rows(source, table),
            "tracked count": lambda: tracking.tracked_count(ENTITY),
            "candidates (both)": lambda: (
                count_candidates(
                    ENTITY,
                    lambda: count_rows(source, table),
                    lambda: tracking.tracked_count(ENTITY),
                    SEND_UNTRACKED,
                    log,
                )
                or 0
            ),
        }
        print(f"{args.rows} source rows, {args.rows - args.rows // 2} tracked; first / median of {args.repeat}")
        for name, count in cases.items():
            value, first, median = timings(count, args.repeat)
            print(f"{name:18} {value:>9}  {first * 1000:8.1f} ms  {median * 1000:8.1f} ms")
    finally:
        source.dispose()
        tracking.engine.dispose()
        server.drop_database(log_db)
        server.drop_database(source_db)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
