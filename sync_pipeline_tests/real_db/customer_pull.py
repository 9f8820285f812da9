"""The Zuora workflows pull as a data engineer declares it (a `SyncComponent` in YAML), with the
application's tables it reads customers from and writes workflows to: shared by the real-database
test of the pull and the fault suite's pull scenarios.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import sqlalchemy as sa
import yaml

from sync_pipeline.demo.packaged import merged
from sync_pipeline.engine.tables import DateTime2
from sync_pipeline.orchestration.component import SyncComponent

DEFS_YAML = """
type: sync_pipeline.orchestration.component.SyncComponent
attributes:
  name: zuora
  entities:
    - name: Workflows
      source:
        kind: http_pages
        pagination: {style: next_link, next_path: pagination.next_page, size_param: page_length, page_size: 50,
                     records_path: data}
      fields:
        - {name: id, type: int}
        - {name: name, length: 200}
        - {name: status, length: 40, nullable: true}
        - {name: updatedAt, type: datetime}
      mapping:
        zuora_id: {from: id}
        name: {from: name}
        status: {from: status}
        updated_at: {from: updatedAt}
      state: none
      sink: {kind: sql_upsert, db: app_db, key_columns: [customer_id, zuora_id], timestamp_column: updated_at,
             partition_column: customer_id, deleted_column: deleted_at}
  settings:
    api: {}
    customers: {db: app_db, secret_key_env_var: ZUORA_SECRET_KEY, simulator: "{simulator}",
                retry_delays_seconds: [0, 0]}
    retries: {max_attempts: 1}
    databases: {app_db: APP_DB_URL, log_db: SYNC_LOG_DB_URL}
    entities:
      Workflows: {key_column: id, endpoint: v1/workflows, target_table: app_zuora_workflows}
"""
"""The pull's declaration; `{simulator}` is the local Zuora's host:port."""


def pull_definitions(address: str, settings: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The pull's definitions against the local Zuora at `address`, with `settings` merged into the declared ones."""
    attributes = yaml.safe_load(DEFS_YAML.replace("{simulator}", address))["attributes"]
    attributes["settings"] = merged(attributes["settings"], settings or {})
    return dg.build_defs_for_component(SyncComponent.resolve_from_dict(attributes))


def workflows_table() -> sa.Table:
    """The application's own table of workflows: unique on (customer, Zuora id), marked deleted, never removed."""
    return sa.Table(
        "app_zuora_workflows",
        sa.MetaData(),
        sa.Column("customer_id", sa.String(100), primary_key=True),
        sa.Column("zuora_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(40), nullable=True),
        sa.Column("updated_at", DateTime2, nullable=True),  # Zuora's milliseconds kept: DATETIME(6) on MariaDB
        sa.Column("deleted_at", DateTime2, nullable=True),
    )


def step_retries(result: dg.ExecuteInProcessResult) -> list[dg.DagsterEvent]:
    """The run's steps put up for another attempt (a passing cause)."""
    return [event for event in result.all_events if event.event_type_value == "STEP_UP_FOR_RETRY"]
