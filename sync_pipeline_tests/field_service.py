"""The packaged field-service syncs set up against a local Praxedo: CHR's database, the Log database, the job."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_pipeline.demo.field_service_seed import (
    PRAXEDO_USER,
    SYNC,
    ChrData,
    field_service_definitions,
    field_service_settings,
    seed_chr,
)
from sync_pipeline.demo.praxedo import PraxedoSimulator
from sync_pipeline.demo.seed import create_log_tables
from sync_pipeline.engine.tables import log_metadata
from sync_pipeline.orchestration.component import declared_spec
from sync_pipeline.resources.database import create_sync_engine
from sync_pipeline_tests.real_db.conftest import table_rows

PASSWORD = "praxedo-pw-7d1c-DO-NOT-LOG"
JOB = f"{SYNC}_sync_job"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@dataclass
class FieldService:
    """A local Praxedo, CHR's database seeded, the Log database, and the field-service job."""

    praxedo: PraxedoSimulator
    chr: sa.Engine
    log: sa.Engine
    defs: dg.Definitions
    instance: dg.DagsterInstance

    def run(self) -> dg.ExecuteInProcessResult:
        """One run of the whole job."""
        job = self.defs.resolve_job_def(JOB)
        return job.execute_in_process(instance=self.instance, run_config=QUIET, raise_on_error=False)

    def figures(self, result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
        """Each entity's materialization metadata by asset name (without the sync's prefix)."""
        return {
            event.materialization.asset_key.to_user_string().removeprefix(f"{SYNC}_"): {
                key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()
            }
            for event in result.get_asset_materialization_events()
        }

    def outputs(self) -> dict[str, str]:
        """Everything the runs left to read: each run's event log, every Log table and CHR's tables."""
        outputs = {
            f"event log of run {run.run_id}": "\n".join(repr(entry) for entry in self.instance.all_logs(run.run_id))
            for run in self.instance.get_runs()
        }
        for table in log_metadata.sorted_tables:
            outputs[f"Log table {table.name}"] = repr(table_rows(self.log, table))
        for name in sa.inspect(self.chr).get_table_names():
            outputs[f"CHR table {name}"] = repr(
                table_rows(self.chr, sa.Table(name, sa.MetaData(), autoload_with=self.chr))
            )
        return outputs

    def edit(self, table: str, key_column: str, key: str, **values: Any) -> None:
        """Change a CHR row, as a CHR user would."""
        target = sa.Table(table, sa.MetaData(), autoload_with=self.chr)
        with self.chr.begin() as conn:
            conn.execute(sa.update(target).where(target.c[key_column] == key).values(**values))


@contextmanager
def field_service(
    urls: Mapping[str, str],
    monkeypatch: pytest.MonkeyPatch,
    data: ChrData,
    settings: Mapping[str, Any] | None = None,
    seed_database: bool = True,
) -> Iterator[FieldService]:
    """The syncs of CHR's `data` (in the database at `urls['chr']`, unless `seed_database` is False: CHR is
    reached through its API) to a local Praxedo, logged in `urls['log']`: two attempts per call, fast."""
    monkeypatch.setenv("CHR_DB_URL", urls["chr"])
    monkeypatch.setenv("SYNC_LOG_DB_URL", urls["log"])
    monkeypatch.setenv("PRAXEDO_PASSWORD", PASSWORD)
    chr_db, log = create_sync_engine(urls["chr"]), create_sync_engine(urls["log"])
    create_log_tables(log)
    with PraxedoSimulator(PRAXEDO_USER, PASSWORD) as praxedo:
        changes = {"retries": {"max_attempts": 2, "initial_delay_seconds": 0.01, "max_delay_seconds": 0.05}}
        chosen = field_service_settings(praxedo.base_url, {**changes, **(settings or {})})
        if seed_database:
            seed_chr(chr_db, declared_spec(SYNC), chosen, data)
        yield FieldService(praxedo, chr_db, log, field_service_definitions(chosen), dg.DagsterInstance.ephemeral())
    chr_db.dispose()
    log.dispose()
