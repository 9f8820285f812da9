"""A sync declared as data in its defs.yaml: its entities, each with its fields, mapping, state and sink.

    name: crm_push
    entities:
      - name: Customers
        source_db: crm_db
        fields: [{name: Id, type: guid}, {name: Name, length: 200}, {name: Status, type: int}]
        mapping:
          id: {from: Id}
          display_name: {from: Name}
          status: {from: Status, value_map: {1: active, 0: inactive}}
        state: row_hash
        sink: {kind: http_records, update_method: PUT, id_field: id}

Where the entities live in a deployment (tables, endpoints, databases, secrets) stays in the sync's
settings, as for the TAMHR push.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sync_pipeline.specs.mapping import FieldMapSettings
from sync_pipeline.specs.model import EntitySpec, FieldType, RecordSinkSpec, StateKind
from sync_pipeline.specs.model import Field as ModelField
from sync_pipeline.specs.sync import SyncSpec

_NAME = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=100)]
_KEY = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=60)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FieldDeclaration(_Strict):
    """One model field: the source column and, unless mapped, the JSON property."""

    name: _NAME
    type: Annotated[FieldType, Field(strict=False)] = FieldType.TEXT
    nullable: bool = False
    length: Annotated[int, Field(ge=1, le=4000)] | None = None


class SinkDeclaration(_Strict):
    """Where records go: batches POSTed as JSON arrays, or one call per record, created or updated."""

    kind: Literal["http_batch", "http_records"] = "http_batch"
    update_method: Literal["PUT", "PATCH"] = "PUT"
    id_field: Annotated[str, Field(min_length=1)] = "id"


class EntityDeclaration(_Strict):
    """One entity of a declared sync."""

    name: _NAME
    asset: _KEY | None = None
    source_db: _KEY
    fields: Annotated[list[FieldDeclaration], Field(min_length=1)]
    mapping: FieldMapSettings | None = None
    state: Literal["never_sent", "row_hash"] = "never_sent"
    sink: SinkDeclaration = SinkDeclaration()

    @model_validator(mode="after")
    def _state_fits_the_sink(self) -> EntityDeclaration:
        per_record = self.sink.kind == "http_records"
        if per_record != (self.state == "row_hash"):
            raise ValueError(
                f"entities.{self.name}: state {self.state} with sink {self.sink.kind}; a per-record sink "
                "(http_records) creates and updates by row hash (state: row_hash), a batch sink sends "
                "each record once (state: never_sent)"
            )
        return self

    def entity_spec(self) -> EntitySpec:
        """The entity as the engine and the Dagster wiring read it."""
        per_record = self.sink.kind == "http_records"
        return EntitySpec(
            name=self.name,
            asset_name=self.asset or _snake(self.name),
            source_db=self.source_db,
            fields=tuple(ModelField(f.name, f.type, f.nullable, f.length) for f in self.fields),
            mapping=self.mapping,
            state=StateKind(self.state),
            record_sink=RecordSinkSpec(self.sink.update_method, self.sink.id_field) if per_record else None,
        )


class SyncDeclaration(_Strict):
    """A whole sync declared in YAML: its name, namespace (default: its name) and entities in order."""

    name: str
    namespace: str | None = None
    entities: Annotated[list[EntityDeclaration], Field(min_length=1)]

    def sync_spec(self) -> SyncSpec:
        """The declared sync; raises `SyncSpecError` for what pydantic cannot see (repeated names)."""
        return SyncSpec(
            name=self.name,
            declared_entities=tuple(entity.entity_spec() for entity in self.entities),
            namespace=self.name if self.namespace is None else self.namespace,
        )


def _snake(name: str) -> str:
    """`ActualOrg` -> `actual_org`: the default asset name of an entity."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
