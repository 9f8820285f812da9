"""The lean pull: one customer's Zuora workflows written by hand for PostgreSQL, the yardstick for the product.

Same job as the product's pull: the customer's client id and Fernet-encrypted secret read from the
customers table, one OAuth2 token by client credentials, the workflow pages read by following
`pagination.next_page`, and each workflow upserted on (customer_id, zuora_id), last write wins by
updated_at. What makes it lean: one keep-alive `requests.Session`, orjson, each page COPYed into a
temporary staging table and merged by one `INSERT … SELECT … ON CONFLICT … DO UPDATE … WHERE
stored.updated_at < incoming.updated_at`, one transaction a page. It marks no deleted rows and keeps
no SchedulerLog, and it imports no Dagster and no SQLAlchemy: its start-up and memory are the floor.

    python -m sync_pipeline_tests.benchmarks.zuora_lean --dsn postgresql://... --table lean_zuora_workflows \\
        --customer bench --page-size 500 --result-file out.json   (the Fernet key in $ZUORA_SECRET_KEY)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
import requests
from cryptography.fernet import Fernet
from psycopg import sql

from sync_pipeline_tests.benchmarks.process_cpu import cpu_seconds

SECRET_KEY_ENV_VAR = "ZUORA_SECRET_KEY"
CUSTOMER_QUERY = 'SELECT "ClientId", "ClientSecretEncrypted", "BaseUrl" FROM "ZUORA_CUSTOMER" WHERE "CustomerId" = %s'
COLUMNS = ("customer_id", "zuora_id", "name", "status", "updated_at")


def statements(table: str) -> tuple[sql.Composed, sql.Composed, sql.Composed]:
    """The staging table's creation, the COPY into it and the last-write-wins merge into `table`."""
    target, staging = sql.Identifier(table), sql.Identifier(f"{table}_staging")
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    create = sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS").format(staging, target)
    copy = sql.SQL("COPY {} ({}) FROM STDIN").format(staging, columns)
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(name), sql.Identifier(name)) for name in COLUMNS[2:]
    )
    merge = sql.SQL(
        "INSERT INTO {target} AS stored ({columns}) SELECT {columns} FROM {staging} "
        "ON CONFLICT (customer_id, zuora_id) DO UPDATE SET {updates} "
        "WHERE stored.updated_at IS NULL OR stored.updated_at < EXCLUDED.updated_at"
    ).format(target=target, columns=columns, staging=staging, updates=updates)
    return create, copy, merge


def pull(dsn: str, table: str, customer: str, page_size: int) -> dict[str, Any]:
    """Pull every page of `customer`'s workflows into `table`; the figures of the run."""
    started = time.perf_counter()
    create, copy_sql, merge = statements(table)
    written = pages = records = 0
    with psycopg.connect(dsn) as conn, requests.Session() as http:
        row = conn.execute(CUSTOMER_QUERY, (customer,)).fetchone()
        if row is None:
            raise SystemExit(f"customer {customer}: not in the customers table")
        client_id, encrypted, base_url = row
        secret = Fernet(os.environ[SECRET_KEY_ENV_VAR].encode()).decrypt(encrypted.encode()).decode()
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        token = http.post(f"{base_url}/oauth/token", data=form, timeout=30)
        token.raise_for_status()
        http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        conn.execute(create)
        conn.commit()
        url: str | None = f"{base_url}/v1/workflows?page=1&page_length={page_size}"
        while url is not None:
            response = http.get(url, timeout=30)
            response.raise_for_status()
            body = orjson.loads(response.content)
            pages += 1
            with conn.cursor() as cur:
                with cur.copy(copy_sql) as copy:
                    for workflow in body["data"]:
                        copy.write_row(
                            (customer, workflow["id"], workflow["name"], workflow["status"], workflow["updatedAt"])
                        )
                        records += 1
                cur.execute(merge)
                written += cur.rowcount
            conn.commit()
            url = body["pagination"]["next_page"]
    return {
        "success": True,
        "pages": pages,
        "records": records,
        "written": written,
        "seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pull, write its figures to `--result-file`."""
    parser = argparse.ArgumentParser(description="The lean hand-written Zuora pull into PostgreSQL.")
    parser.add_argument("--dsn", required=True, help="libpq URL of the application's database")
    parser.add_argument("--table", required=True, help="the workflows table, shaped as the product's")
    parser.add_argument("--customer", required=True)
    parser.add_argument("--page-size", type=int, required=True)
    parser.add_argument("--result-file", type=Path, required=True)
    args = parser.parse_args(argv)
    outcome = pull(args.dsn, args.table, args.customer, args.page_size)
    outcome["cpu_seconds"] = cpu_seconds()
    args.result_file.write_text(json.dumps(outcome), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
