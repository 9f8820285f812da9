"""What one create costs the Log database: `RecordSender.send` of new records against the in-memory fake
API (no socket, so the figure is the sender and its writes), and the same writes alone, one transaction
per call (as the sender does) against one transaction for all of them.

    python -m sync_pipeline_tests.benchmarks.record_sink [--records 2000] [--backends sqlite,postgresql,mariadb]

PostgreSQL and MariaDB get a fresh database each (dropped afterwards). It prints microseconds per record.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.audit.scheduler_log import ApiCall, SchedulerLogWriter
from sync_pipeline.engine.state.row_hashes import upsert_row_hashes
from sync_pipeline.engine.state.tracking import utc_now
from sync_pipeline.engine.tables import scheduler_log_table
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.fakes import RecordingApiClient
from sync_pipeline_tests.real_db.conftest import fresh_databases
from sync_pipeline_tests.record_sink_scenarios import SCHEDULER_LOG_COLUMNS, WORK_ORDERS, change, record_sender

ENDPOINT = "http://receiver.test/api/records/work-orders"


@contextlib.contextmanager
def log_database(backend: str) -> Iterator[sa.Engine]:
    """A fresh Log database with every Log table on `backend`."""
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{Path(folder) / 'log.db'}"
        else:
            url = stack.enter_context(fresh_databases(backend, ["log_db"]))["log_db"]
        engine = create_sync_engine(url)
        create_log_tables(engine)
        yield engine
        engine.dispose()


def per_record_us(seconds: float, records: int) -> float:
    """Seconds for `records` as microseconds each."""
    return seconds / records * 1e6


def measure(backend: str, records: int) -> dict[str, float]:
    """Microseconds per record: the sender, its writes one transaction each, the writes in one transaction."""
    figures: dict[str, float] = {}
    with log_database(backend) as engine:
        sender = record_sender(engine, ENDPOINT, RecordingApiClient())
        started = time.perf_counter()
        sender.send([change(n) for n in range(records)])
        figures["sender"] = per_record_us(time.perf_counter() - started, records)
    writer = SchedulerLogWriter(SCHEDULER_LOG_COLUMNS)
    call = ApiCall(ENDPOINT, 1, 201, 3)
    rows = [(c.entity_id, c.row_hash, str(n)) for n, c in enumerate(change(n) for n in range(records))]
    with log_database(backend) as engine:
        started = time.perf_counter()
        for row in rows:
            with engine.begin() as conn:
                upsert_row_hashes(conn, WORK_ORDERS, [row], utc_now())
                writer.write(conn, WORK_ORDERS, call)
        figures["writes, one transaction per call"] = per_record_us(time.perf_counter() - started, records)
    with log_database(backend) as engine:
        started = time.perf_counter()
        with engine.begin() as conn:
            upsert_row_hashes(conn, WORK_ORDERS, rows, utc_now())
            conn.execute(sa.insert(scheduler_log_table), [writer.row(WORK_ORDERS, call) for _ in rows])
        figures["writes, one transaction for all"] = per_record_us(time.perf_counter() - started, records)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgresql,mariadb")
    args = parser.parse_args()
    print(f"{'backend':<12}{'case':<36}{'us/record':>10}")
    for backend in args.backends.split(","):
        for case, value in measure(backend, args.records).items():
            print(f"{backend:<12}{case:<36}{value:>10.0f}")


if __name__ == "__main__":
    main()
