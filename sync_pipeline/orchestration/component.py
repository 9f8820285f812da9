"""`SyncComponent`: a sync declared in YAML, one instance per sync in dg's defs folder.

`dg list components` shows the type, `dg scaffold defs sync_pipeline.orchestration.component.SyncComponent
<name>` makes a new instance (a defs.yaml and a settings file to fill in), and each instance builds its
sync's assets, checks, jobs, schedule, alert sensor and resources, every name derived from the sync's
own (see `specs/sync.py`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from sync_pipeline.orchestration.sync_definitions import build_sync_definitions
from sync_pipeline.settings import SettingsError, load_settings
from sync_pipeline.specs.catalog import SYNCS

EXAMPLE_SETTINGS = Path(__file__).parent.parent / "settings.example.yaml"


class SyncScaffolder(dg.Scaffolder[Any]):
    """A new instance: defs.yaml naming the declared sync under the folder's name, and a settings file
    copied from the production example, to be edited before the code location loads it."""

    def scaffold(self, request: dg.ScaffoldRequest[Any]) -> None:
        """Write defs.yaml and settings.yaml into the new folder."""
        name = Path(request.target_path).name
        dg.scaffold_component(request, {"sync": next(iter(SYNCS)), "name": name, "settings_file": "settings.yaml"})
        shutil.copyfile(EXAMPLE_SETTINGS, Path(request.target_path, "settings.yaml"))


@dg.scaffold_with(SyncScaffolder)
class SyncComponent(dg.Component, dg.Model, dg.Resolvable):
    """One sync: which declared sync it runs, under which name and namespace, with which settings file."""

    sync: str = Field(description=f"The declared sync this instance runs: one of {', '.join(SYNCS)}.")
    name: str | None = Field(
        default=None,
        description="This instance's name, from which its group, jobs, schedule and sensor are named; "
        "unset: the declared sync's.",
    )
    namespace: str | None = Field(
        default=None,
        description="Prefix of its asset names, resource keys and EntityType in the Log database; unset: the "
        "declared sync's when `name` is unset, else `name`. '' keeps the bare names (TAMHR's production rows).",
    )
    settings_file: str | None = Field(
        default=None,
        description="The sync's settings file, relative to this defs.yaml or absolute; unset: "
        "$SYNC_PIPELINE_SETTINGS, else the packaged demo settings.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The sync's definitions under its settings; an unknown sync or bad settings fail the load, named."""
        declared = SYNCS.get(self.sync)
        if declared is None:
            known = ", ".join(SYNCS)
            raise SettingsError(f"{context.path}: sync: {self.sync!r} is not a declared sync; known: {known}")
        sync = (
            declared
            if self.name is None and self.namespace is None
            else declared.renamed(self.name or declared.name, self.namespace)
        )
        path = None if self.settings_file is None else Path(context.path, self.settings_file)
        return build_sync_definitions(sync, load_settings(path, sync))
