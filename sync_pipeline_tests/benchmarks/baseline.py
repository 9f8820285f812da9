"""The lean baseline: the Users sync written by hand for PostgreSQL, as the yardstick for the product.

Same semantics as the product: batches of exactly `batch_size` untracked records, POSTed as a JSON
array of objects named as the model's fields; already-tracked Ids skipped; after a 2xx (and only
then) the batch's canonical lower-case EntityIds go into TB_R_SYNC_TRACKING with EntityType
'Users', together with the call's SchedulerLog row, in one transaction. What makes it lean: one
server-side cursor over the whole table (no re-querying per page), one index-probing lookup per
page (none when nothing was tracked before the run, as in the product), orjson, one keep-alive
`requests.Session`, and COPY for the tracking rows. It imports no Dagster and no SQLAlchemy, so its
start-up and memory are the floor a sync can have.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import requests

from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME
from sync_pipeline_tests.benchmarks.process_memory import peak_rss_mb

ENTITY = "Users"
TRACKING_COPY = 'COPY "TB_R_SYNC_TRACKING" ("EntityType", "EntityId", "SyncTimestamp") FROM STDIN'
# A join to the page's Ids rather than `"EntityId" = ANY(%s)` or `IN (...)`: with statistics taken
# when the table was small (autovacuum is off on the bench server; production tables grow too),
# PostgreSQL plans the IN-list form as a scan of every row of the EntityType, so each page's lookup
# costs O(tracked rows); the join is planned as one unique-index probe per Id whatever the stats.
TRACKED_AMONG = (
    'SELECT t."EntityId" FROM "TB_R_SYNC_TRACKING" AS t JOIN unnest(%s::text[]) AS page(id) '
    'ON t."EntityId" = page.id WHERE t."EntityType" = %s'
)
TRACKS_ANY = 'SELECT EXISTS (SELECT 1 FROM "TB_R_SYNC_TRACKING" WHERE "EntityType" = %s)'
SCHEDULER_LOG_INSERT = (
    'INSERT INTO "SchedulerLog" ("ID", "ApplicationName", "LogID", "LogCategory", "Activity", '
    '"ApplicationModule", "IPHostName", "Status", "AdditionalInformation", "CreatedBy", "CreatedOn", '
    '"RowStatus") VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)'
)


@dataclass
class BaselineReport:
    """What the baseline did, in the product's terms."""

    rows_found: int = 0
    already_tracked: int = 0
    sent: int = 0
    batches_ok: int = 0
    batches_failed: int = 0
    seconds: float = 0.0


class BaselineSync:
    """One Users sync: a source cursor, a Log connection and an HTTP session, used batch by batch."""

    def __init__(
        self, log: psycopg.Connection[Any], http: requests.Session, endpoint_url: str, report: BaselineReport
    ) -> None:
        self._log = log
        self._http = http
        self._endpoint_url = endpoint_url
        self._report = report
        self._host = socket.gethostname()
        # Nothing tracked when the run starts means nothing to skip: rows this run tracks are never
        # read again (the cursor only moves forward), so the per-page lookups can be left out.
        row = log.execute(TRACKS_ANY, (ENTITY,)).fetchone()
        log.rollback()
        self._lookups = bool(row and row[0])

    def untracked(self, page: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The page's rows whose Id (column 0, already canonical text) is not yet tracked."""
        self._report.rows_found += len(page)
        if not self._lookups:
            return list(page)
        ids = [row[0] for row in page]
        with self._log.cursor() as cur:
            tracked = {entity_id for (entity_id,) in cur.execute(TRACKED_AMONG, (ids, ENTITY))}
        self._log.rollback()
        self._report.already_tracked += len(tracked)
        return [row for row in page if row[0] not in tracked] if tracked else list(page)

    def send(self, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        """POST one batch; on a 2xx, COPY its Ids into tracking and log the call, in one transaction."""
        started = time.perf_counter()
        body = orjson.dumps([dict(zip(columns, row, strict=True)) for row in rows])
        response = self._http.post(self._endpoint_url, data=body, timeout=30)
        duration_ms = round((time.perf_counter() - started) * 1000)
        ok = 200 <= response.status_code < 300
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self._log.cursor() as cur:
            if ok:
                stamp = now.isoformat(sep=" ")
                with cur.copy(TRACKING_COPY) as copy:
                    copy.write("".join(f"{ENTITY}\t{row[0]}\t{stamp}\n" for row in rows))
            details = {
                "EndpointUrl": self._endpoint_url,
                "BatchSize": len(rows),
                "HttpResponseCode": response.status_code,
                "DurationMs": duration_ms,
            }
            cur.execute(
                SCHEDULER_LOG_INSERT,
                (
                    uuid.uuid4(),
                    "TAMHR",
                    "SYNC_PIPELINE",
                    "Scheduler",
                    f"Sync Batch: {ENTITY}",
                    "ThirdPartySync",
                    self._host,
                    "Success" if ok else "Failure",
                    json.dumps(details),
                    "sync_pipeline",
                    now,
                    True,
                ),
            )
        self._log.commit()
        if ok:
            self._report.sent += len(rows)
            self._report.batches_ok += 1
        else:
            self._report.batches_failed += 1


def sync_users(
    source_dsn: str,
    log_dsn: str,
    endpoint_url: str,
    api_key: str,
    batch_size: int = 3000,
    table: str = "TB_M_USER",
    api_key_header: str = "X-API-Key",
) -> BaselineReport:
    """Send every untracked Users row to `endpoint_url` in batches of `batch_size`; track the acknowledged."""
    report = BaselineReport()
    started = time.perf_counter()
    columns = [f.name for f in ENTITIES_BY_NAME[ENTITY].fields]
    select_list = ", ".join(f'"{name}"::text' if name == "Id" else f'"{name}"' for name in columns)
    with (
        psycopg.connect(source_dsn) as source,
        psycopg.connect(log_dsn) as log,
        requests.Session() as http,
    ):
        http.headers.update({"Content-Type": "application/json; charset=utf-8", api_key_header: api_key})
        sync = BaselineSync(log, http, endpoint_url, report)
        pending: list[tuple[Any, ...]] = []
        # Column 0 is the Id as PostgreSQL's uuid text: already the canonical lower-case form.
        with source.cursor(name="users_out") as cursor:
            cursor.itersize = batch_size
            cursor.execute(f'SELECT {select_list} FROM "{table}"')
            while page := cursor.fetchmany(batch_size):
                pending.extend(sync.untracked(page))
                while len(pending) >= batch_size:
                    sync.send(columns, pending[:batch_size])
                    del pending[:batch_size]
            if pending:
                sync.send(columns, pending)
    report.seconds = time.perf_counter() - started
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m sync_pipeline_tests.benchmarks.baseline --source-dsn … --log-dsn … --endpoint-url …`."""
    parser = argparse.ArgumentParser(description="The lean baseline Users sync (PostgreSQL only).")
    parser.add_argument("--source-dsn", required=True, help="libpq URL of the Default database")
    parser.add_argument("--log-dsn", required=True, help="libpq URL of the Log database")
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--api-key", default="bench-key")
    parser.add_argument("--batch-size", type=int, default=3000)
    parser.add_argument("--result-file", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    report = sync_users(args.source_dsn, args.log_dsn, args.endpoint_url, args.api_key, args.batch_size)
    result = {"impl": "baseline", "success": report.batches_failed == 0, **asdict(report), "peak_rss_mb": peak_rss_mb()}
    if args.result_file:
        args.result_file.write_text(json.dumps(result), encoding="utf-8")
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
