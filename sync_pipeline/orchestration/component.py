"""`SyncComponent`: a sync declared in YAML, one instance per sync in dg's defs folder.

`dg list components` shows the type, `dg scaffold defs sync_pipeline.orchestration.component.SyncComponent
<name>` makes a new instance (a defs.yaml and a settings file to fill in), and each instance builds its
sync's assets, checks, jobs, schedule, alert sensor and resources, every name derived from the sync's
own (see `specs/sync.py`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from pydantic import Field, ValidationError

from sync_pipeline.engine.mapping.field_map import FieldMapError
from sync_pipeline.orchestration.sync_definitions import build_sync_definitions
from sync_pipeline.settings import (
    Settings,
    SettingsError,
    describe_errors,
    parse_settings,
    read_settings_file,
    settings_path,
)
from sync_pipeline.specs.catalog import SYNCS
from sync_pipeline.specs.declaration import SyncDeclaration
from sync_pipeline.specs.sync import SyncSpec, SyncSpecError

EXAMPLE_SETTINGS = Path(__file__).parent.parent / "settings.example.yaml"


def settings_env_var(sync_name: str) -> str:
    """The variable that, when set, names a sync's settings file instead of its instance's `settings_file`:
    `SYNC_PIPELINE_ZUORA_SETTINGS` for the sync `zuora`."""
    return f"SYNC_PIPELINE_{sync_name.upper()}_SETTINGS"


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
    """One sync: a packaged declaration (`sync:`) or one written here (`entities:`), under which name and
    namespace, with which settings (a file, or `settings:` here)."""

    sync: str | None = Field(
        default=None, description=f"A packaged sync this instance runs: one of {', '.join(SYNCS)}; or give `entities`."
    )
    entities: list[dict[str, Any]] | None = Field(
        default=None,
        description="The sync's entities declared here, in order: name, source_db, fields, mapping, state, sink "
        "(README, 'A sync declared in YAML'); needs `name`.",
    )
    settings: dict[str, Any] | None = Field(
        default=None, description="The sync's settings written here, in the settings file's shape; or `settings_file`."
    )
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
        description="The sync's settings file, relative to this defs.yaml or absolute; "
        "$SYNC_PIPELINE_<NAME>_SETTINGS overrides it; unset: $SYNC_PIPELINE_SETTINGS, else the packaged demo settings.",
    )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        """The sync's definitions under its settings; a bad declaration or bad settings fail the load, named."""
        sync, settings = self.resolved(context.path)
        try:
            return build_sync_definitions(sync, settings)
        except FieldMapError as exc:
            raise SettingsError(f"{context.path}: {exc}") from None

    def resolved(self, where: Path) -> tuple[SyncSpec, Settings]:
        """The sync this instance runs and its settings (`where` is its folder); a sync declared here takes the
        source and sink its settings give an entity instead of the declared ones (see `OVERRIDES`)."""
        declared = self.sync_spec(where)
        raw: object
        if self.settings is not None:
            if self.settings_file is not None:
                raise SettingsError(f"{where}: give settings or settings_file, not both")
            raw, source = self.settings, f"{where} settings"
        else:
            path = self.settings_path(declared, where) or settings_path()
            raw, source = read_settings_file(path), f"settings file {path}"
        if not isinstance(raw, dict):
            return declared, parse_settings(raw, source, declared)
        overrides, rest = _split_overrides(raw)
        if not overrides:
            return declared, parse_settings(rest, source, declared)
        if self.entities is None:
            named = next(iter(overrides))
            raise SettingsError(
                f"{source}: entities.{named}: {', '.join(overrides[named])} can only be set for a sync declared "
                "with entities, not a packaged one"
            )
        try:
            sync = self._declared(where, _overridden(self.entities, overrides, source))
        except SettingsError as exc:
            given = ", ".join(f"entities.{name}.{key}" for name, keys in overrides.items() for key in keys)
            raise SettingsError(f"{source} gives {given} in place of the declaration's; then {exc}") from None
        return sync, parse_settings(rest, source, sync)

    def settings_path(self, sync: SyncSpec, where: Path) -> Path | None:
        """The settings file: the one `SYNC_PIPELINE_<NAME>_SETTINGS` names, else `settings_file` (relative
        to this instance's folder), else None (the packaged TAMHR default, or $SYNC_PIPELINE_SETTINGS)."""
        override = os.environ.get(settings_env_var(sync.name))
        if override:
            return Path(override)
        return None if self.settings_file is None else Path(where, self.settings_file)

    def sync_spec(self, where: Path) -> SyncSpec:
        """The sync this instance declares or names."""
        if (self.sync is None) == (self.entities is None):
            raise SettingsError(f"{where}: give either sync (a packaged sync) or entities (declared here)")
        if self.entities is not None:
            return self._declared(where, self.entities)
        declared = SYNCS.get(str(self.sync))
        if declared is None:
            known = ", ".join(SYNCS)
            raise SettingsError(f"{where}: sync: {self.sync!r} is not a declared sync; known: {known}")
        if self.name is None and self.namespace is None:
            return declared
        return declared.renamed(self.name or declared.name, self.namespace)

    def _declared(self, where: Path, entities: list[dict[str, Any]]) -> SyncSpec:
        """The sync of these declared entities, under this instance's name and namespace."""
        if self.name is None:
            raise SettingsError(f"{where}: a sync declared with entities needs a name")
        try:
            declaration = SyncDeclaration.model_validate(
                {"name": self.name, "namespace": self.namespace, "entities": entities}
            )
            return declaration.sync_spec()
        except ValidationError as exc:
            raise SettingsError(f"{where} is invalid:\n  {describe_errors(exc)}") from None
        except SyncSpecError as exc:
            raise SettingsError(f"{where}: {exc}") from None


OVERRIDES = ("source_db", "source", "sink")
"""What a deployment's settings may give an entity instead of its declaration: where it is read (a database
table, or an HTTP API) and where it goes. CHR reached through its API rather than its database is settings."""


def _split_overrides(raw: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The entities' source and sink overrides, by entity, and the settings without them."""
    entities = raw.get("entities")
    if not isinstance(entities, dict):
        return {}, raw
    overrides: dict[str, dict[str, Any]] = {}
    kept: dict[str, Any] = {}
    for name, entity in entities.items():
        if isinstance(entity, dict) and any(key in entity for key in OVERRIDES):
            overrides[name] = {key: entity[key] for key in OVERRIDES if key in entity}
            entity = {key: value for key, value in entity.items() if key not in OVERRIDES}
        kept[name] = entity
    return overrides, {**raw, "entities": kept}


def _overridden(
    entities: list[dict[str, Any]], overrides: dict[str, dict[str, Any]], source: str
) -> list[dict[str, Any]]:
    """The declared entities with the settings' sources and sinks in place of theirs (a source replaces a
    declared source_db, and the other way round)."""
    names = [str(entity.get("name")) for entity in entities]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise SettingsError(f"{source}: entities.{unknown[0]}: is not a known entity; known: {', '.join(names)}")
    changed = []
    for entity in entities:
        override = overrides.get(str(entity.get("name")), {})
        if "source" in override or "source_db" in override:
            entity = {key: value for key, value in entity.items() if key not in ("source", "source_db")}
        changed.append({**entity, **override})
    return changed


DEFS_FOLDER = Path(__file__).parent.parent / "defs"
"""dg's defs folder of the code location: one `defs.yaml` per sync instance."""
COMPONENT_TYPE = f"{SyncComponent.__module__}.{SyncComponent.__qualname__}"


def declared_sync(name: str, defs_folder: Path = DEFS_FOLDER) -> tuple[SyncSpec, Settings]:
    """The sync called `name` among the SyncComponent instances under `defs_folder`, with its settings, as the
    code location loads them (for commands run beside it, such as `sync-pipeline requeue`)."""
    instance, _, folder = _declared_instance(name, defs_folder)
    return instance.resolved(folder)


def declared_spec(name: str, defs_folder: Path = DEFS_FOLDER) -> SyncSpec:
    """The sync called `name` as declared under `defs_folder`, its settings not read (they may not exist yet)."""
    return _declared_instance(name, defs_folder)[1]


def _declared_instance(name: str, defs_folder: Path) -> tuple[SyncComponent, SyncSpec, Path]:
    found: list[str] = []
    for defs_yaml in sorted(defs_folder.rglob("defs.yaml")):
        for document in yaml.safe_load_all(defs_yaml.read_text(encoding="utf-8")):
            if not isinstance(document, dict) or document.get("type") != COMPONENT_TYPE:
                continue
            instance = SyncComponent.resolve_from_dict(document.get("attributes") or {})
            sync = instance.sync_spec(defs_yaml.parent)
            if sync.name == name:
                return instance, sync, defs_yaml.parent
            found.append(sync.name)
    known = ", ".join(found) or "none"
    raise SettingsError(f"sync {name!r} is not declared under {defs_folder}; declared: {known}")
