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
      - name: Workflows
        source: {kind: http_pages, pagination: {style: page_number, page_size: 50}, since_param: updated_since}
        fields: [{name: id, type: int}, {name: name}, {name: updated_at, type: datetime}]
        state: since_cursor
        cursor_field: updated_at
        sink: {kind: sql_upsert, db: app_db, key_columns: [id], timestamp_column: updated_at}

Where the entities live in a deployment (tables, endpoints, databases, secrets) stays in the sync's
settings, as for the TAMHR push.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sync_pipeline.specs.mapping import FieldMapSettings
from sync_pipeline.specs.model import (
    EntitySpec,
    FieldType,
    ForwardOnly,
    HttpSourceSpec,
    Pagination,
    RecordDetails,
    RecordSinkSpec,
    Reference,
    SearchWindow,
    SqlSinkSpec,
    StateKind,
)
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


class DetailsDeclaration(_Strict):
    """A GET per row written for more of it (see `specs.model.RecordDetails`): `path` below the entity's
    endpoint with `{column}` placeholders, the JSON answer into `column`."""

    path: Annotated[str, Field(min_length=1, pattern=r"\{[A-Za-z][A-Za-z0-9_]*\}")]
    column: _NAME
    status_column: _NAME
    error_column: _NAME

    def details(self) -> RecordDetails:
        """The details as the engine reads them."""
        return RecordDetails(self.path, self.column, self.status_column, self.error_column)


class ForwardOnlyDeclaration(_Strict):
    """A status column an update only moves forward (see `specs.model.ForwardOnly`)."""

    column: _NAME
    order: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)]

    @model_validator(mode="after")
    def _each_status_once(self) -> ForwardOnlyDeclaration:
        repeated = sorted({status for status in self.order if self.order.count(status) > 1})
        if repeated:
            raise ValueError(f"sink.forward_only.order: {', '.join(repeated)} listed more than once")
        return self


class SinkDeclaration(_Strict):
    """Where records go: batches POSTed as JSON arrays, one call per record (created or updated), or rows
    of a table in the database `db`, upserted (last write wins by `timestamp_column`) or updated."""

    kind: Literal["http_batch", "http_records", "sql_upsert", "sql_update"] = "http_batch"
    update_method: Literal["PUT", "PATCH"] = "PUT"
    id_field: Annotated[str, Field(min_length=1)] = "id"
    on_conflict: Literal["fail", "update"] | None = None
    create: bool | None = None
    db: _KEY | None = None
    key_columns: Annotated[list[_NAME], Field(min_length=1)] | None = None
    timestamp_column: _NAME | None = None
    columns: Annotated[list[_NAME], Field(min_length=1)] | None = None
    partition_column: _NAME | None = None
    deleted_column: _NAME | None = None
    commit: Literal["batch", "run"] | None = None
    history: bool | None = None
    details: DetailsDeclaration | None = None
    forward_only: ForwardOnlyDeclaration | None = None

    @model_validator(mode="after")
    def _each_kind_has_what_it_needs(self) -> SinkDeclaration:
        needed = {
            "http_batch": (),
            "http_records": (),
            "sql_upsert": ("db", "key_columns", "timestamp_column"),
            "sql_update": ("db", "key_columns", "columns"),
        }[self.kind]
        for name in needed:
            if getattr(self, name) is None:
                raise ValueError(f"sink.{name}: is required for a {self.kind} sink")
        read = (*needed, "partition_column") if self.kind.startswith("sql_") else needed
        read = (*read, "commit") if self.kind.startswith("sql_") else read
        read = (*read, "deleted_column", "history", "details") if self.kind == "sql_upsert" else read
        read = (*read, "forward_only") if self.kind == "sql_update" else read
        sql_only = (
            "db",
            "key_columns",
            "timestamp_column",
            "columns",
            "partition_column",
            "deleted_column",
            "commit",
            "history",
            "details",
            "forward_only",
        )
        extra = [name for name in sql_only if name not in read and getattr(self, name) is not None]
        if extra:
            raise ValueError(f"sink.{extra[0]}: not read by a {self.kind} sink; remove it")
        if self.on_conflict is not None and self.kind != "http_records":
            raise ValueError(f"sink.on_conflict: only read by an http_records sink, not {self.kind}; remove it")
        if self.create is not None and self.kind != "http_records":
            raise ValueError(f"sink.create: only read by an http_records sink, not {self.kind}; remove it")
        if self.forward_only is not None and self.forward_only.column not in (self.columns or []):
            raise ValueError(
                f"sink.forward_only.column: {self.forward_only.column!r} is not one of the columns the update "
                f"sets ({', '.join(self.columns or [])})"
            )
        return self

    def record_sink(self) -> RecordSinkSpec | None:
        """The per-record sink this declares, if it is one."""
        if self.kind != "http_records":
            return None
        return RecordSinkSpec(self.update_method, self.id_field, self.on_conflict or "fail", self.create is not False)

    def sql_sink(self) -> SqlSinkSpec | None:
        """The SQL sink this declares, if it is one."""
        if self.db is None or self.key_columns is None:
            return None
        return SqlSinkSpec(
            db=self.db,
            mode=self.kind.removeprefix("sql_"),
            key_columns=tuple(self.key_columns),
            timestamp_column=self.timestamp_column,
            columns=tuple(self.columns) if self.columns else None,
            partition_column=self.partition_column,
            deleted_column=self.deleted_column,
            commit=self.commit or "batch",
            history=bool(self.history),
            details=self.details.details() if self.details else None,
            forward_only=ForwardOnly(self.forward_only.column, tuple(self.forward_only.order))
            if self.forward_only
            else None,
        )


class PaginationDeclaration(_Strict):
    """How the API pages its records (see `specs.model.Pagination`)."""

    style: Literal["page_number", "offset", "next_link"]
    page_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    size_param: Annotated[str, Field(min_length=1)] | None = "page_size"
    page_param: Annotated[str, Field(min_length=1)] = "page"
    first_page: Annotated[int, Field(ge=0)] = 1
    offset_param: Annotated[str, Field(min_length=1)] = "offset"
    records_path: str = ""
    next_path: Annotated[str, Field(min_length=1)] = "next"
    cursor_param: Annotated[str, Field(min_length=1)] | None = None
    total_path: Annotated[str, Field(min_length=1)] | None = None
    max_pages: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000
    more_path: Annotated[str, Field(min_length=1)] | None = None
    more_value: int | str | None = None

    def pagination(self) -> Pagination:
        """The paginator as the engine reads it; raises ValueError naming the setting that cannot work."""
        return Pagination(**self.model_dump())

    @model_validator(mode="after")
    def _the_engine_can_page_with_it(self) -> PaginationDeclaration:
        self.pagination()
        return self


class WindowDeclaration(_Strict):
    """A search read in time windows, halved while the API answers that one holds too many results (see
    `specs.model.SearchWindow`)."""

    from_param: Annotated[str, Field(min_length=1)]
    to_param: Annotated[str, Field(min_length=1)]
    too_many_path: Annotated[str, Field(min_length=1)]
    too_many_value: int | str
    min_seconds: Annotated[float, Field(gt=0, le=86_400)] = 1.0

    def window(self) -> SearchWindow:
        """The window as the engine reads it."""
        return SearchWindow(**self.model_dump())


class SourceDeclaration(_Strict):
    """Where records come from when not from a database table: a paginated HTTP API at the entity's
    endpoint, `params` sent on every request, the since-cursor's mark sent in `since_param` or as the
    start of a search `window`."""

    kind: Literal["http_pages"]
    pagination: PaginationDeclaration
    since_param: Annotated[str, Field(min_length=1)] | None = None
    params: dict[Annotated[str, Field(min_length=1)], str] = {}
    window: WindowDeclaration | None = None
    key_param: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_way_to_send_the_mark(self) -> SourceDeclaration:
        if self.since_param is not None and self.window is not None:
            raise ValueError("source.since_param: a windowed search sends the mark as window.from_param; remove it")
        return self

    def http_source(self) -> HttpSourceSpec:
        """The source as the engine reads it."""
        return HttpSourceSpec(
            self.pagination.pagination(),
            self.since_param,
            tuple(self.params.items()),
            self.window.window() if self.window else None,
            self.key_param,
        )


class ReferenceDeclaration(_Strict):
    """A field of the entity holding the key of a record of an earlier entity (see `specs.model.Reference`)."""

    field: _NAME
    entity: _NAME


class EntityDeclaration(_Strict):
    """One entity of a declared sync."""

    name: _NAME
    asset: _KEY | None = None
    source_db: _KEY | None = None
    source: SourceDeclaration | None = None
    fields: Annotated[list[FieldDeclaration], Field(min_length=1)]
    mapping: FieldMapSettings | None = None
    state: Literal["never_sent", "row_hash", "since_cursor", "none"] = "never_sent"
    cursor_field: _NAME | None = None
    references: list[ReferenceDeclaration] = []
    sink: SinkDeclaration = SinkDeclaration()

    @model_validator(mode="after")
    def _one_source(self) -> EntityDeclaration:
        if (self.source_db is None) == (self.source is None):
            raise ValueError(
                f"entities.{self.name}: give source_db (a database table) or source (an HTTP API), one of them"
            )
        return self

    @model_validator(mode="after")
    def _state_fits_the_sink(self) -> EntityDeclaration:
        allowed = _STATES_BY_SINK[self.sink.kind]
        if self.state not in allowed:
            raise ValueError(
                f"entities.{self.name}.state: {self.state} cannot go with a {self.sink.kind} sink (allowed: "
                f"{', '.join(allowed)}); {_STATE_MEANINGS}"
            )
        return self

    @model_validator(mode="after")
    def _references_are_fields_of_a_per_record_sink(self) -> EntityDeclaration:
        names = [f.name for f in self.fields]
        for position, reference in enumerate(self.references):
            if reference.field not in names:
                raise ValueError(
                    f"entities.{self.name}.references[{position}].field: {reference.field!r} is not one of its "
                    f"fields ({', '.join(names)})"
                )
        if self.references and self.sink.kind != "http_records":
            raise ValueError(
                f"entities.{self.name}.references: only read by an http_records sink (a record held back until "
                f"the receiver has the one it points to), not {self.sink.kind}"
            )

        return self

    @model_validator(mode="after")
    def _an_adopting_sink_sends_the_id(self) -> EntityDeclaration:
        if self.sink.on_conflict != "update" and self.sink.create is not False:
            return self
        top = self.sink.id_field.split(".")[0]
        sent = {name.split(".")[0] for name in self.mapping.root} if self.mapping else {f.name for f in self.fields}
        if top not in sent:
            raise ValueError(
                f"entities.{self.name}.sink.id_field: {self.sink.id_field!r} is not in the record sent, so the "
                f"record could not be updated at it (on_conflict: update, or create: false); sent: "
                f"{', '.join(sorted(sent))}"
            )
        return self

    @model_validator(mode="after")
    def _deletions_need_a_complete_listing(self) -> EntityDeclaration:
        if self.sink.deleted_column is not None and self.state != "none":
            raise ValueError(
                f"entities.{self.name}.sink.deleted_column: needs state none (every record read each run); a "
                f"{self.state} read leaves records out, which would be marked deleted"
            )
        return self

    @model_validator(mode="after")
    def _cursor_is_a_field(self) -> EntityDeclaration:
        fields = {f.name: f for f in self.fields}
        if self.state != "since_cursor":
            if self.cursor_field is not None:
                raise ValueError(f"entities.{self.name}.cursor_field: only read with state since_cursor; remove it")
            if self.source is not None and self.source.since_param is not None:
                raise ValueError(f"entities.{self.name}.source.since_param: only read with state since_cursor")
            if self.source is not None and self.source.window is not None:
                raise ValueError(
                    f"entities.{self.name}.source.window: only read with state since_cursor (its mark is where "
                    "the first window starts)"
                )
            return self
        if self.cursor_field is None or self.cursor_field not in fields:
            raise ValueError(
                f"entities.{self.name}.cursor_field: state since_cursor needs the field whose mark it keeps; "
                f"got {self.cursor_field!r}, fields: {', '.join(fields)}"
            )
        if fields[self.cursor_field].type not in _CURSOR_TYPES:
            raise ValueError(
                f"entities.{self.name}.cursor_field: {self.cursor_field} is {fields[self.cursor_field].type.value}; "
                "a cursor is a datetime, int or text field"
            )
        if self.source is not None and self.source.since_param is None and self.source.window is None:
            raise ValueError(
                f"entities.{self.name}.source.since_param: state since_cursor needs the query parameter the "
                "API reads the mark from (or a search window)"
            )
        if (
            self.source is not None
            and self.source.window is not None
            and fields[self.cursor_field].type is not (FieldType.DATETIME)
        ):
            raise ValueError(
                f"entities.{self.name}.cursor_field: a search window is a time window, so its cursor "
                f"{self.cursor_field} must be a datetime field"
            )
        return self

    def entity_spec(self) -> EntitySpec:
        """The entity as the engine and the Dagster wiring read it."""
        source = self.source
        return EntitySpec(
            name=self.name,
            asset_name=self.asset or _snake(self.name),
            source_db=self.source_db,
            fields=tuple(ModelField(f.name, f.type, f.nullable, f.length) for f in self.fields),
            mapping=self.mapping,
            state=StateKind(self.state),
            record_sink=self.sink.record_sink(),
            sql_sink=self.sink.sql_sink(),
            http_source=source.http_source() if source else None,
            cursor_field=self.cursor_field,
            references=tuple(Reference(r.field, r.entity) for r in self.references),
        )


_STATES_BY_SINK = {
    "http_batch": ("never_sent",),
    "http_records": ("row_hash", "since_cursor"),
    "sql_upsert": ("since_cursor", "none"),
    "sql_update": ("since_cursor", "none"),
}
_STATE_MEANINGS = (
    "never_sent: each record sent once, tracked; row_hash: created, updated when changed; since_cursor: only "
    "records at or past the kept mark read (a per-record sink still decides create or update by row hash); "
    "none: every record read each run, the SQL sink's key and last write wins decide"
)
_CURSOR_TYPES = (FieldType.DATETIME, FieldType.INT, FieldType.TEXT)


class SyncDeclaration(_Strict):
    """A whole sync declared in YAML: its name, namespace (default: its name) and entities in order."""

    name: str
    namespace: str | None = None
    entities: Annotated[list[EntityDeclaration], Field(min_length=1)]

    @model_validator(mode="after")
    def _references_point_back(self) -> SyncDeclaration:
        earlier: dict[str, str] = {}
        for entity in self.entities:
            for position, reference in enumerate(entity.references):
                where = f"entities.{entity.name}.references[{position}].entity"
                if reference.entity not in earlier:
                    raise ValueError(
                        f"{where}: {reference.entity!r} is not an entity declared before it (earlier: "
                        f"{', '.join(earlier) or 'none'}); an entity runs after those it points to"
                    )
                if earlier[reference.entity] != "http_records":
                    raise ValueError(
                        f"{where}: {reference.entity} has a {earlier[reference.entity]} sink; only the records of "
                        "an http_records sink are known to the receiver by their row hash and id"
                    )
            earlier[entity.name] = entity.sink.kind
        return self

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
