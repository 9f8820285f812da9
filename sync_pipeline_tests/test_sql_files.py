"""The DDL under sql/ matches the tables the code writes, and URLs never show a password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_pipeline.cli import log_tables_ddl
from sync_pipeline.engine.tables import (
    conflict_table,
    credential_use_table,
    cursor_table,
    dead_letter_table,
    history_table,
    lock_table,
    rejected_table,
    row_hash_table,
    scheduler_log_table,
    tracking_table,
)
from sync_pipeline.resources.database import masked_url

SQL = Path(__file__).resolve().parents[1] / "sql"


@pytest.mark.parametrize(
    ("folder", "dialect"), [("postgresql", "postgresql"), ("mariadb", "mysql"), ("sqlite", "sqlite")]
)
def test_generated_ddl_files_are_what_the_metadata_creates(folder: str, dialect: str) -> None:
    committed = (SQL / folder / "log_tables.sql").read_text()
    assert committed.split("\n", 1)[1] == log_tables_ddl(dialect)


def test_tracking_table_tsql_is_exactly_as_the_product_owner_specified() -> None:
    tsql = (SQL / "mssql" / "TB_R_SYNC_TRACKING.sql").read_text()
    assert "Id INT PRIMARY KEY IDENTITY(1,1)" in tsql
    assert "SyncTimestamp DATETIME2 NOT NULL DEFAULT GETUTCDATE()" in tsql
    assert (
        "CREATE UNIQUE INDEX UQ_TB_R_SYNC_TRACKING_EntityType_EntityId ON TB_R_SYNC_TRACKING(EntityType, EntityId);"
        in tsql
    )


@pytest.mark.parametrize(
    ("file", "table"),
    [
        ("TB_R_SYNC_TRACKING.sql", tracking_table),
        ("SchedulerLog.sql", scheduler_log_table),
        ("TB_R_SYNC_REJECTED.sql", rejected_table),
        ("TB_R_SYNC_LOCK.sql", lock_table),
        ("TB_R_SYNC_ROW_HASH.sql", row_hash_table),
        ("TB_R_SYNC_CURSOR.sql", cursor_table),
        ("TB_R_SYNC_DEAD_LETTER.sql", dead_letter_table),
        ("TB_R_SYNC_HISTORY.sql", history_table),
        ("TB_R_SYNC_CONFLICT.sql", conflict_table),
        ("TB_R_SYNC_CREDENTIAL_USE.sql", credential_use_table),
    ],
)
def test_hand_written_tsql_has_the_columns_and_types_the_metadata_compiles_to(file: str, table: sa.Table) -> None:
    tsql = (SQL / "mssql" / file).read_text()
    generated = log_tables_ddl("mssql")
    declared = dict(re.findall(r"^\s+(\w+) (\w+)", tsql, flags=re.M))
    compiled = dict(re.findall(r"^\s+\[(\w+)\] (\w+)", generated, flags=re.M))
    for column in table.columns:
        expected = {"INTEGER": "INT"}.get(compiled[column.name], compiled[column.name])
        assert declared[column.name] == expected, column.name


def test_the_cursor_table_tsql_keeps_one_mark_per_entity_under_the_named_primary_key() -> None:
    tsql = (SQL / "mssql" / "TB_R_SYNC_CURSOR.sql").read_text()

    assert "CONSTRAINT PK_TB_R_SYNC_CURSOR PRIMARY KEY (EntityType)" in tsql
    assert "CONSTRAINT [PK_TB_R_SYNC_CURSOR] PRIMARY KEY ([EntityType])" in log_tables_ddl("mssql")
    assert "CursorValue NVARCHAR(100) NOT NULL" in tsql


def test_masked_url_hides_the_password_also_inside_odbc_connect() -> None:
    plain = masked_url("mssql+pyodbc://sync:s3cret@host/db?driver=ODBC+Driver+18+for+SQL+Server")
    odbc = masked_url("mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC%7D%3BSERVER%3Dh%3BUID%3Dsync%3BPWD%3Ds3cret")

    assert "s3cret" not in plain and "***" in plain
    assert "s3cret" not in odbc and "PWD=***" in odbc.replace("%3D", "=").replace("%2A", "*")


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+psycopg://sync@h/db?password=s3cret", id="password in the query"),
        pytest.param("mssql+pyodbc://sync@h/db?driver=ODBC+Driver+18&PWD=s3cret", id="PWD passed on to ODBC"),
        pytest.param(
            "mssql+pyodbc:///?odbc_connect=SERVER%3Dh%3BPWD%3D%7Bab%3Bs3cret%7D%7D%7D%3BDATABASE%3Dd",
            id="braced PWD holding ; and }} in odbc_connect",
        ),
    ],
)
def test_masked_url_hides_a_password_wherever_a_driver_would_take_it_from(url: str) -> None:
    masked = masked_url(url)

    assert "cret" not in masked and "%2A%2A%2A" in masked
