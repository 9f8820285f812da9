"""A packaged sync instance (`defs/<sync>/`: defs.yaml and settings.yaml) run with settings of the caller's
own: how the demo and the tests point a packaged sync at local simulators without a copy of its YAML."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from sync_pipeline.orchestration.component import DEFS_FOLDER, SyncComponent


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it, nested mappings merged key by key."""
    result = dict(base)
    for key, value in changes.items():
        both_mappings = isinstance(value, Mapping) and isinstance(result.get(key), Mapping)
        result[key] = merged(result[key], value) if both_mappings else value
    return result


def packaged_settings(sync: str, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The packaged settings.yaml of `defs/<sync>/` with `changes` laid over it (see `merged`)."""
    raw: dict[str, Any] = yaml.safe_load((DEFS_FOLDER / sync / "settings.yaml").read_text(encoding="utf-8"))
    return merged(raw, changes or {})


def packaged_attributes(sync: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The SyncComponent attributes of the packaged instance `defs/<sync>/`, these settings instead of its file."""
    defs_yaml = Path(DEFS_FOLDER, sync, "defs.yaml")
    attributes: dict[str, Any] = yaml.safe_load(defs_yaml.read_text(encoding="utf-8"))["attributes"]
    attributes = {**attributes, "settings": dict(settings)}
    del attributes["settings_file"]
    return attributes


def packaged_definitions(sync: str, settings: Mapping[str, Any]) -> dg.Definitions:
    """The definitions of the packaged instance `defs/<sync>/` under these settings instead of its file."""
    return dg.build_defs_for_component(SyncComponent.resolve_from_dict(packaged_attributes(sync, settings)))
