"""The code location `sync_pipeline`: `dg dev`, `dg launch`, workspace.yaml and the tests load `defs`."""

from __future__ import annotations

import dagster as dg

from sync_pipeline.orchestration.alerts import build_alert_sensor, build_alert_webhook
from sync_pipeline.orchestration.dry_run_job import build_dry_run_job
from sync_pipeline.orchestration.resources import build_resources
from sync_pipeline.orchestration.schedules import build_schedule, sync_job
from sync_pipeline.orchestration.sync_assets import build_entity_assets
from sync_pipeline.settings import Settings, load_settings
from sync_pipeline.specs.tamhr import TAMHR_ENTITIES

CONSOLE_LOGGER = dg.colored_console_logger.configured(
    lambda config: {"log_level": config["log_level"]},
    config_schema={"log_level": dg.Field(str, default_value="INFO", description="DEBUG, INFO, WARNING or ERROR")},
)


def build_definitions(settings: Settings) -> dg.Definitions:
    """Assets, jobs, schedule, alert sensor and resources for one settings file.

    Every run executes its steps in the run's own process: the entities are a chain, so a process
    per step (the default executor) would only add a code-location import of ~2 s per entity.
    """
    return dg.Definitions(
        assets=build_entity_assets(TAMHR_ENTITIES, settings),
        jobs=[sync_job, build_dry_run_job(TAMHR_ENTITIES, settings)],
        schedules=[build_schedule(settings.schedule)],
        sensors=[build_alert_sensor(settings.alerts)],
        resources={**build_resources(settings), "alert_webhook": build_alert_webhook()},
        executor=dg.in_process_executor,
        # Runs print INFO and above to their console unless run config asks for another level (the
        # demo prints its own summary); every event is still in the run's event log.
        loggers={"console": CONSOLE_LOGGER},
    )


defs = build_definitions(load_settings())
