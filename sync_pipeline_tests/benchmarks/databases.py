"""The benchmark's PostgreSQL databases: a seeded source per row count and one Log database, reset per run.

The source rows are the demo's generated rows (`sync_pipeline.demo.seed.generated_rows`), loaded
with COPY so a million take seconds rather than minutes, in a table created from the same metadata
as everywhere else. A source database is kept between benchmark runs when it already holds the
asked-for rows. Before every measured run the Log tables are emptied, the chosen Ids pre-tracked,
vacuumed and checkpointed, so each implementation starts from the same state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
import sqlalchemy as sa
from psycopg import sql

from sync_pipeline.demo.seed import create_log_tables, create_source_table, generated_rows
from sync_pipeline.engine.tables import SCHEDULER_LOG_TABLE_NAME, TRACKING_TABLE_NAME, log_metadata
from sync_pipeline.settings import EntitySettings
from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME

ENTITY = "Users"
SEED = 0
COPY_CHUNK_ROWS = 10_000
CANONICAL_GUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


@dataclass(frozen=True)
class PostgresServer:
    """The local server, e.g. `postgresql://postgres@127.0.0.1:5432`; URLs for each database on it."""

    url: str

    def dsn(self, database: str) -> str:
        """libpq URL, for psycopg (the baseline, the set-up here)."""
        return f"{self.url.rstrip('/')}/{database}"

    def sqlalchemy_url(self, database: str) -> str:
        """SQLAlchemy URL, for the product's `SyncDatabase` resources."""
        return self.dsn(database).replace("postgresql://", "postgresql+psycopg://", 1)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection to the `postgres` database, for CREATE/DROP DATABASE."""
        return psycopg.connect(self.dsn("postgres"), autocommit=True)

    def recreate_database(self, database: str) -> None:
        """Drop (disconnecting anyone) and create `database`."""
        self.drop_database(database)
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))

    def drop_database(self, database: str) -> None:
        """Drop `database` if it exists, disconnecting anyone."""
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))

    def row_count(self, database: str, table: str) -> int | None:
        """Rows in `table`, or None when the database or the table does not exist."""
        try:
            with psycopg.connect(self.dsn(database)) as conn:
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
                return int(row[0]) if row else None
        except (psycopg.OperationalError, psycopg.errors.UndefinedTable):
            return None


def users_settings() -> EntitySettings:
    """Where Users live in the benchmark: the packaged default table name."""
    return EntitySettings(table="TB_M_USER", key_column="Id", endpoint="users")


def ensure_source(server: PostgresServer, database: str, rows: int) -> bool:
    """Make `database` hold exactly `rows` generated Users; True if it had to be (re)seeded."""
    where = users_settings()
    if server.row_count(database, where.table_name) == rows:
        return False
    server.recreate_database(database)
    engine = sa.create_engine(server.sqlalchemy_url(database))
    spec = ENTITIES_BY_NAME[ENTITY]
    create_source_table(engine, spec, where)
    engine.dispose()
    columns = [field.name for field in spec.fields]
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(where.table_name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with psycopg.connect(server.dsn(database)) as conn:
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in generated_rows(spec, rows, SEED):
                copy.write_row([row[name] for name in columns])
        conn.commit()
        conn.autocommit = True
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(where.table_name)))
    return True


def sorted_ids(server: PostgresServer, database: str) -> list[str]:
    """Every Users Id as canonical text, in key order."""
    with psycopg.connect(server.dsn(database)) as conn:
        query = sql.SQL('SELECT "Id"::text FROM {} ORDER BY "Id"').format(sql.Identifier(users_settings().table_name))
        return [str(value) for (value,) in conn.execute(query)]


def create_log_database(server: PostgresServer, database: str) -> None:
    """A fresh Log database with every Log table the product's metadata defines."""
    server.recreate_database(database)
    engine = sa.create_engine(server.sqlalchemy_url(database))
    create_log_tables(engine)
    engine.dispose()


def reset_log(server: PostgresServer, database: str, tracked_ids: Sequence[str]) -> None:
    """Empty every Log table, pre-track `tracked_ids` as Users, then vacuum, analyze and checkpoint."""
    tables = sql.SQL(", ").join(sql.Identifier(table.name) for table in log_metadata.sorted_tables)
    tracking = sql.Identifier(TRACKING_TABLE_NAME)
    with psycopg.connect(server.dsn(database)) as conn:
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(tables))
        copy_sql = sql.SQL('COPY {} ("EntityType", "EntityId", "SyncTimestamp") FROM STDIN').format(tracking)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for start in range(0, len(tracked_ids), COPY_CHUNK_ROWS):
                chunk = tracked_ids[start : start + COPY_CHUNK_ROWS]
                copy.write("".join(f"{ENTITY}\t{entity_id}\t2024-01-01 00:00:00\n" for entity_id in chunk))
        conn.commit()
        conn.autocommit = True
        for table in log_metadata.sorted_tables:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table.name)))
        conn.execute("CHECKPOINT")


@dataclass(frozen=True)
class LogCounts:
    """What the Log database holds after a run."""

    tracked: int
    tracked_distinct: int
    tracked_non_canonical: int
    log_success: int
    log_failure: int


def log_counts(server: PostgresServer, database: str) -> LogCounts:
    """Users tracking rows (all, distinct, non-canonical) and SchedulerLog rows by status."""
    tracking = sql.Identifier(TRACKING_TABLE_NAME)
    scheduler_log = sql.Identifier(SCHEDULER_LOG_TABLE_NAME)
    with psycopg.connect(server.dsn(database)) as conn:
        tracked = conn.execute(
            sql.SQL(
                'SELECT count(*), count(DISTINCT "EntityId"), count(*) FILTER (WHERE "EntityId" !~ %s) '
                'FROM {} WHERE "EntityType" = %s'
            ).format(tracking),
            (CANONICAL_GUID_PATTERN, ENTITY),
        ).fetchone()
        statuses: dict[str, int] = dict(
            conn.execute(
                sql.SQL('SELECT "Status", count(*) FROM {} GROUP BY "Status"').format(scheduler_log)
            ).fetchall()
        )
    assert tracked is not None
    return LogCounts(
        tracked=int(tracked[0]),
        tracked_distinct=int(tracked[1]),
        tracked_non_canonical=int(tracked[2]),
        log_success=int(statuses.get("Success", 0)),
        log_failure=int(statuses.get("Failure", 0)),
    )
