"""The YAML shape of a field map, validated by pydantic, and the `FieldMap` it declares.

One entry per destination field (dotted for nested objects), e.g.

    mapping:
      id: {from: Id}
      status: {from: State, value_map: {A: active, I: inactive}, default: unknown}
      address.street: {from: Street}
      quantity: {from: Qty, type: text}
      origin: {constant: CHR}
      state: {from: status, value_map: {COMPLETED: done}, when_null: {field: completedOn, value: cancelled}}

pydantic checks each rule's shape here, as data; the engine's `field_map_from` then builds the
`FieldMap` and checks it against the source's fields.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel

from sync_pipeline.specs.model import FieldType

JsonScalar = str | int | float | bool | None


class WhenNullSettings(BaseModel):
    """`when_null`: the destination field is `value` in every record whose source field `field` is null."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    field: str = Field(min_length=1)
    value: JsonScalar


class FieldRuleSettings(BaseModel):
    """One destination field's rule as written in YAML (`from`, `type`, `constant`, `value_map`, `default`,
    `when_null`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    from_: str | None = Field(default=None, alias="from", min_length=1)
    type: Annotated[FieldType, Field(strict=False)] | None = None
    constant: JsonScalar = None
    value_map: dict[JsonScalar, JsonScalar] | None = None
    default: JsonScalar = None
    when_null: WhenNullSettings | None = None


class FieldMapSettings(RootModel[dict[str, FieldRuleSettings]]):
    """A whole field map as written in YAML: destination field -> rule."""
