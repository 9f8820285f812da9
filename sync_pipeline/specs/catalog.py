"""The syncs this package declares, by name: what a `SyncComponent` instance's `sync:` refers to."""

from __future__ import annotations

from sync_pipeline.specs.sync import SyncSpec
from sync_pipeline.specs.tamhr import TAMHR_SYNC

SYNCS: dict[str, SyncSpec] = {sync.name: sync for sync in (TAMHR_SYNC,)}
