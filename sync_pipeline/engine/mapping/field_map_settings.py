"""The YAML shape of a field map, validated by pydantic, and the `FieldMap` it declares.

One entry per destination field (dotted for nested objects), e.g.

    mapping:
      id: {from: Id}
      status: {from: State, value_map: {A: active, I: inactive}, default: unknown}
      address.street: {from: Street}
      quantity: {from: Qty, type: text}
      origin: {constant: CHR}

pydantic checks each rule's shape; `FieldMap` then checks it against the source's fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel

from sync_pipeline.engine.mapping.field_map import NO_VALUE, FieldMap, FieldRule
from sync_pipeline.specs.model import Field as SourceField
from sync_pipeline.specs.model import FieldType

JsonScalar = str | int | float | bool | None


class FieldRuleSettings(BaseModel):
    """One destination field's rule as written in YAML (`from`, `type`, `constant`, `value_map`, `default`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    from_: str | None = Field(default=None, alias="from", min_length=1)
    type: Annotated[FieldType, Field(strict=False)] | None = None
    constant: JsonScalar = None
    value_map: dict[JsonScalar, JsonScalar] | None = None
    default: JsonScalar = None

    def rule(self) -> FieldRule:
        """The engine's rule; a `constant` or `default` written as null is kept apart from one not written."""
        given = self.model_fields_set
        return FieldRule(
            source=self.from_,
            type=self.type,
            constant=self.constant if "constant" in given else NO_VALUE,
            value_map=self.value_map,
            default=self.default if "default" in given else NO_VALUE,
        )


class FieldMapSettings(RootModel[dict[str, FieldRuleSettings]]):
    """A whole field map as written in YAML: destination field -> rule."""

    def field_map(self, source_fields: Sequence[SourceField]) -> FieldMap:
        """The checked `FieldMap` over `source_fields`; raises `FieldMapError` naming the destination field."""
        return FieldMap({name: settings.rule() for name, settings in self.root.items()}, source_fields)
