"""A sync: a named family of entities synced in order, and the names it owns in Dagster and the Log database.

Several syncs live in one code location and share one Log database, so every name a sync creates is
derived from its own name and namespace: its Dagster group, jobs, schedule and sensor, its resource
keys, and the `EntityType` of its rows in TB_R_SYNC_TRACKING, TB_R_SYNC_LOCK, TB_R_SYNC_REJECTED and
SchedulerLog. The TAMHR push has the empty namespace, so its rows keep the bare entity names
(`Users`, `ActualOrg`, ...) they have in production; any other sync's rows are `<namespace>.<Entity>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from sync_pipeline.specs.model import EntitySpec

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class SyncSpecError(ValueError):
    """A sync declaration that cannot be built: the message names the sync and what is wrong."""


@dataclass(frozen=True)
class SyncSpec:
    """A sync's name, its namespace in shared tables and resource keys, and its entities in sync order.

    `entities` are the declared entities with their asset names prefixed by the namespace, if any.
    """

    name: str
    declared_entities: tuple[EntitySpec, ...]
    namespace: str
    entities: tuple[EntitySpec, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SyncSpecError(f"sync {self.name!r}: name must be lower-case letters, digits and _, up to 40")
        if self.namespace and not _NAME.match(self.namespace):
            raise SyncSpecError(f"sync {self.name}: namespace {self.namespace!r} must look like a sync name, or be ''")
        if not self.declared_entities:
            raise SyncSpecError(f"sync {self.name}: has no entities")
        for attribute in ("name", "asset_name"):
            values = [getattr(entity, attribute) for entity in self.declared_entities]
            repeated = sorted({value for value in values if values.count(value) > 1})
            if repeated:
                raise SyncSpecError(f"sync {self.name}: entity {attribute} {repeated[0]!r} appears twice")
        prefix = f"{self.namespace}_" if self.namespace else ""
        entities = tuple(replace(e, asset_name=prefix + e.asset_name) for e in self.declared_entities)
        object.__setattr__(self, "entities", entities)

    def renamed(self, name: str, namespace: str | None = None) -> SyncSpec:
        """The same declared entities under `name` and `namespace` (default: the name), so one declaration
        can run twice, say for a second receiver, sharing nothing but the Log database."""
        return SyncSpec(
            name=name, declared_entities=self.declared_entities, namespace=name if namespace is None else namespace
        )

    @property
    def group(self) -> str:
        """The Dagster asset group of the sync's entities."""
        return f"{self.name}_sync"

    @property
    def job_name(self) -> str:
        """The job that runs every entity in order."""
        return f"{self.name}_sync_job"

    @property
    def dry_run_job_name(self) -> str:
        """The job that previews every entity, sending nothing."""
        return f"{self.name}_sync_dry_run"

    @property
    def schedule_name(self) -> str:
        """The schedule that runs the job."""
        return f"{self.name}_sync_nightly"

    @property
    def sensor_name(self) -> str:
        """The alert sensor watching the job."""
        return f"{self.name}_sync_alerts"

    def entity_type(self, entity: EntitySpec) -> str:
        """The entity's `EntityType` in the Log database's shared tables."""
        return f"{self.namespace}.{entity.name}" if self.namespace else entity.name

    def resource_key(self, key: str) -> str:
        """A resource key of this sync (`log_db`, `sync_api`, a source database), unique in the code location."""
        return f"{self.namespace}_{key}" if self.namespace else key

    def entity(self, name: str) -> EntitySpec:
        """The entity called `name`; raises KeyError naming the sync when there is none."""
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(f"sync {self.name} has no entity {name!r}")
