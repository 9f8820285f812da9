"""The application's table of Zuora workflows, as the packaged declaration (`defs/zuora/defs.yaml`) writes it.

The application owns it: the sync adds no column or table of its own to it (its history, conflicts and
logs are in the Log database). One row per customer and Zuora workflow id, the listing's fields
flattened, the export's JSON with whether it was fetched, and the time a complete listing no longer
had it (never deleted). T-SQL: `sql/mssql/ZUORA_WORKFLOW.sql`; the demo and the tests create it from here.
"""

from __future__ import annotations

import sqlalchemy as sa

from sync_pipeline.engine.tables import DateTime2, LongText

WORKFLOWS_TABLE_NAME = "ZUORA_WORKFLOW"

workflows_metadata = sa.MetaData()

workflows_table = sa.Table(
    WORKFLOWS_TABLE_NAME,
    workflows_metadata,
    sa.Column("customer_id", sa.Unicode(100), primary_key=True),
    sa.Column("zuora_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Unicode(255), nullable=False),
    sa.Column("description", sa.Unicode(4000), nullable=True),
    sa.Column("status", sa.Unicode(40), nullable=True),
    sa.Column("created_at", DateTime2, nullable=True),
    sa.Column("updated_at", DateTime2, nullable=False),  # Zuora's milliseconds kept: DATETIME2, DATETIME(6)
    sa.Column("export_json", LongText, nullable=True),
    sa.Column("export_status", sa.Unicode(10), nullable=False),
    sa.Column("export_error", sa.Unicode(1000), nullable=True),
    sa.Column("deleted_at", DateTime2, nullable=True),
)
"""Unique on (customer_id, zuora_id), its primary key: the upsert's key."""
