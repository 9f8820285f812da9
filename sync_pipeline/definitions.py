"""The code location `sync_pipeline`: `dg dev`, `dg launch`, workspace.yaml and the tests load `defs`.

Each sync is a `SyncComponent` instance in `sync_pipeline/defs/<sync>/defs.yaml` (dg's defs folder);
what every sync shares — the alert webhook, the executor, the console logger — is added here once.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from sync_pipeline.orchestration.alerts import ALERT_WEBHOOK_KEY, build_alert_webhook
from sync_pipeline.orchestration.sync_definitions import build_sync_definitions
from sync_pipeline.settings import Settings
from sync_pipeline.specs.tamhr import TAMHR_SYNC

CONSOLE_LOGGER = dg.colored_console_logger.configured(
    lambda config: {"log_level": config["log_level"]},
    config_schema={"log_level": dg.Field(str, default_value="INFO", description="DEBUG, INFO, WARNING or ERROR")},
)


def shared_definitions() -> dg.Definitions:
    """What every sync uses: the alert webhook, and runs that execute their steps in their own process.

    The entities of a sync are a chain, so a process per step (the default executor) would only add
    a code-location import of ~2 s per entity. Runs print INFO and above to their console unless run
    config asks for another level (the demo prints its own summary); every event is still in the run's
    event log.
    """
    return dg.Definitions(
        resources={ALERT_WEBHOOK_KEY: build_alert_webhook()},
        executor=dg.in_process_executor,
        loggers={"console": CONSOLE_LOGGER},
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    """The code location with only the TAMHR push, under `settings`: what the demo and the tests run."""
    return dg.Definitions.merge(build_sync_definitions(TAMHR_SYNC, settings), shared_definitions())


defs = dg.Definitions.merge(dg.load_from_defs_folder(path_within_project=Path(__file__).parent), shared_definitions())
