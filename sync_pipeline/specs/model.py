"""What a sync's entities are made of: field types, fields and entity specs, as plain data.

An entity is one `EntitySpec`: its name, which database it is read from, and the fields of the
model the API expects. Where it lives in a given deployment (table, key column, endpoint) is a
setting, so adding an entity means adding a spec and an entry in the settings file, not code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # specs.mapping reads FieldType from here
    from sync_pipeline.specs.mapping import FieldMapSettings


class FieldType(enum.Enum):
    """The JSON-facing types the product owner's models use."""

    GUID = "guid"
    TEXT = "text"
    INT = "int"
    DECIMAL = "decimal"
    DATETIME = "datetime"
    BOOL = "bool"


@dataclass(frozen=True)
class Field:
    """One model field; its name is both the source column and the JSON property."""

    name: str
    type: FieldType = FieldType.TEXT
    nullable: bool = False
    length: int | None = None  # None = unbounded text (NVARCHAR(MAX))


class StateKind(enum.Enum):
    """What a sync keeps per record to know what to send next."""

    NEVER_SENT = "never_sent"
    """TB_R_SYNC_TRACKING: a record is sent once, then never again (the TAMHR push)."""
    ROW_HASH = "row_hash"
    """TB_R_SYNC_ROW_HASH: a new record is created, a changed one updated, an unchanged one skipped."""
    SINCE_CURSOR = "since_cursor"
    """TB_R_SYNC_CURSOR: only records whose cursor field is at or past the mark are read; the mark moves
    once the records up to it were delivered or quarantined."""
    NONE = "none"
    """Nothing kept: every run reads every record, and the SQL sink's key and last write wins decide."""


ConflictAction = Literal["fail", "update"]


@dataclass(frozen=True)
class RecordSinkSpec:
    """Per-record create/update over HTTP: POST new records to the endpoint, `update_method` changed ones
    to `<endpoint>/<external id>`, the id read from a create's answer at `id_field`.

    `on_conflict: update` is for a receiver that takes the id from us (Praxedo's business events): a
    create answered 409 means the receiver holds the record already (made by hand, or by a run that
    crashed after the answer), so it is updated at the id sent in the record's `id_field` instead."""

    update_method: str = "PUT"
    id_field: str = "id"
    on_conflict: ConflictAction = "fail"
    create: bool = True
    """False: the receiver holds every record already (CHR its work orders), so each is only ever updated, at
    the id in its `id_field`; a 404 is a refusal."""


@dataclass(frozen=True)
class Reference:
    """A record's field that holds the key of another entity of the sync (a contact's account): a record
    is sent only once the receiver has acknowledged the record it points to, else held back until then."""

    field: str
    entity: str


@dataclass(frozen=True)
class SqlSinkSpec:
    """Records into a table of the database `db` (a resource key), matched on `key_columns`: upserted, last
    write wins by `timestamp_column`, or `columns` of matched rows updated."""

    db: str
    mode: str  # "upsert" or "update"
    key_columns: tuple[str, ...]
    timestamp_column: str | None = None
    columns: tuple[str, ...] | None = None
    """Upsert: the columns written besides key and timestamp (None: every column of the record);
    update: the columns set."""
    partition_column: str | None = None
    """The column every row gets the run's partition (its customer) in, for a sync partitioned by customer."""
    deleted_column: str | None = None
    """Upsert of a complete listing: the column a row no longer listed gets the time in (never removed)."""
    commit: Literal["batch", "run"] = "batch"
    """When writes commit: after each batch, or all of a run's at its end (a failed run changes nothing)."""
    history: bool = False
    """Upsert: keep each change to a stored row (old and new values) and flag conflicting records."""
    details: RecordDetails | None = None
    """Upsert: one GET per row written, its JSON answer kept in a column (a Zuora workflow's export)."""
    forward_only: ForwardOnly | None = None
    """Update: a row is only written when it moves `forward_only.column` forward in its order."""


@dataclass(frozen=True)
class ForwardOnly:
    """A status column that only moves forward: `order` lists its values from first to last, and a row is
    updated only when the record's value comes later than the stored one (a value the order lacks, such as
    NULL, comes before them all). A work order CHR already closed is not reopened by a late completion."""

    column: str
    order: tuple[str, ...]

    def rank(self, value: object) -> int:
        """Where `value` is in the order; -1 for a value the order lacks."""
        try:
            return self.order.index(value)  # type: ignore[arg-type]
        except ValueError:
            return -1


@dataclass(frozen=True)
class RecordDetails:
    """More of a record, read by its own GET at `path` below the entity's endpoint (`{column}` filled from
    the row), kept in `column`, with `status_column` ("ok" or "failed") and `error_column` (why it failed).

    It is fetched for each row the upsert writes, and for a stored row whose status says failed: a failed
    detail is tried again on the next run even when its record has not changed."""

    path: str
    column: str
    status_column: str
    error_column: str

    @property
    def columns(self) -> tuple[str, str, str]:
        """The three columns a fetch writes."""
        return (self.column, self.status_column, self.error_column)

    @property
    def name(self) -> str:
        """What the details are, for figures: the path's last literal segment (`export` of `{id}/export`)."""
        literal = [part for part in self.path.split("/") if part and "{" not in part]
        return literal[-1] if literal else "detail"


PaginationStyle = Literal["page_number", "offset", "next_link"]


@dataclass(frozen=True)
class Pagination:
    """How an API pages a list, as data: the style, its query parameters, where the records, the
    next link and the total are in the body (dotted paths; "" is the body itself), and a page bound."""

    style: PaginationStyle
    page_size: int = 100
    records_path: str = ""
    size_param: str | None = "page_size"
    """Sent with `page_size` on every request; None sends none (next_link only: the API's own size)."""
    page_param: str = "page"
    first_page: int = 1
    offset_param: str = "offset"
    next_path: str = "next"
    cursor_param: str | None = None
    """next_link: the value at `next_path` is a token sent as this parameter, not a URL."""
    total_path: str | None = None
    max_pages: int = 10_000
    """Requests one read may make: more means a runaway paginator or a wrong page size."""
    more_path: str | None = None
    more_value: int | str | None = None
    """page_number and offset: a page whose value at `more_path` is `more_value` is followed by another, any
    other value ends the read (Praxedo's result code 200 against 0), instead of a page shorter than the size."""

    def __post_init__(self) -> None:
        if self.style not in get_args(PaginationStyle):
            allowed = ", ".join(get_args(PaginationStyle))
            raise ValueError(f"pagination.style: {self.style!r} is not one of {allowed}")
        for name, value, least in (("page_size", self.page_size, 1), ("max_pages", self.max_pages, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"pagination.{name}: {value!r} is not allowed; a whole number of at least {least}")
        if isinstance(self.first_page, bool) or not isinstance(self.first_page, int) or self.first_page < 0:
            raise ValueError(f"pagination.first_page: {self.first_page!r} is not allowed; 0, 1 or more")
        if (self.more_path is None) != (self.more_value is None) or (self.more_path and self.style == "next_link"):
            raise ValueError(
                "pagination.more_path and more_value: given together, for style page_number or offset "
                f"(got more_path {self.more_path!r}, more_value {self.more_value!r}, style {self.style})"
            )
        if self.style != "next_link" and not self.size_param:
            raise ValueError(
                f"pagination.size_param: required for style {self.style}: its stop rule compares pages with page_size"
            )

    @property
    def advanced_by(self) -> str:
        """The setting naming what moves the read to the next page, for an error that names it."""
        if self.style == "page_number":
            return f"pagination.page_param {self.page_param!r}"
        if self.style == "offset":
            return f"pagination.offset_param {self.offset_param!r}"
        if self.cursor_param:
            return f"pagination.cursor_param {self.cursor_param!r}"
        return f"the next link at pagination.next_path {self.next_path!r}"


@dataclass(frozen=True)
class SearchWindow:
    """A search API that pages through only so many results (Praxedo: 2,000): the read asks for a time window
    from `from_param` to `to_param` (ISO-8601), and an answer holding `too_many_value` at `too_many_path`
    means the window holds more than that, so it is halved and each half asked again, down to
    `min_seconds`. A since-cursor's mark (less the entity's lookback) is where the first window starts."""

    from_param: str
    to_param: str
    too_many_path: str
    too_many_value: int | str
    min_seconds: float = 1.0


@dataclass(frozen=True)
class HttpSourceSpec:
    """Records read from a paginated HTTP API at the entity's endpoint, with `params` on every request; with
    a since-cursor, its mark is sent in `since_param`, or as the start of a search `window`."""

    pagination: Pagination
    since_param: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    window: SearchWindow | None = None
    key_param: str | None = None
    """Where records are asked for by key (`key_param=k1,k2`): how the retry queue's are read again."""


@dataclass(frozen=True)
class EntitySpec:
    """What is synced: the entity's name, its asset name, its source (a database, or the HTTP API) and its
    model, and how: its mapping to the destination's fields (none: the model's own names), its state and
    its sink (none of `record_sink`/`sql_sink`: batches POSTed as JSON arrays)."""

    name: str
    asset_name: str
    source_db: str | None  # resource key of the source database ("default_db", "ess_db"); None: an HTTP source
    fields: tuple[Field, ...]
    mapping: FieldMapSettings | None = field(default=None, compare=False, hash=False)
    state: StateKind = StateKind.NEVER_SENT
    record_sink: RecordSinkSpec | None = None
    sql_sink: SqlSinkSpec | None = None
    http_source: HttpSourceSpec | None = None
    cursor_field: str | None = None
    """The field whose high-water mark a since-cursor state keeps."""
    references: tuple[Reference, ...] = ()
    """Fields pointing at records of earlier entities, which must reach the receiver first."""

    @property
    def databases(self) -> tuple[str, ...]:
        """The resource keys of the databases the entity reads and writes (the Log database aside)."""
        keys = [self.source_db, self.sql_sink.db if self.sql_sink else None]
        return tuple(dict.fromkeys(key for key in keys if key))

    @property
    def calls_the_api(self) -> bool:
        """Whether the entity reads from or sends to the sync's HTTP API."""
        return self.http_source is not None or self.sql_sink is None or self.sql_sink.details is not None

    def field(self, name: str) -> Field:
        """The field called `name`; raises KeyError naming the entity when there is none."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(f"entity {self.name} has no field {name!r}")
