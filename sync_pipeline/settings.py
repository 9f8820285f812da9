"""The one YAML settings file: everything about a deployment that is not a secret.

Secrets (database URLs, the API key) never live here; they come from environment variables through
Dagster `EnvVar`. The file is found through `SYNC_PIPELINE_SETTINGS`; without it the packaged
`default_settings.yaml` (the embedded demo) is used. Invalid settings fail when definitions load,
with the setting's name, the bad value and what is allowed.
"""

from __future__ import annotations

import os
import re
import socket
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urljoin, urlsplit

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from sync_pipeline.connectors.praxedo.operations import MANAGERS
from sync_pipeline.specs.model import EntitySpec, FieldType, StateKind
from sync_pipeline.specs.sync import SyncSpec
from sync_pipeline.specs.tamhr import API_KEY_ENV_VAR, DATABASE_URL_ENV_VARS, TAMHR_SYNC

SETTINGS_ENV_VAR = "SYNC_PIPELINE_SETTINGS"
DEFAULT_SETTINGS_PATH = Path(__file__).with_name("default_settings.yaml")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_VAR_NAME = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$", max_length=100)]
LOG_DB = "log_db"
"""The database key of the Log database (TB_R_SYNC_TRACKING, SchedulerLog, ...) in `databases`."""


class SettingsError(ValueError):
    """Raised when the settings file is missing, unreadable or holds an invalid value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def check_http_url(value: str) -> str:
    """Accept only http(s) URLs without credentials in them (secrets belong in env vars)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials; secrets come from environment variables (api.api_key_env_var)")
    return value


_MEDIA_TYPE = r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$"
_SUCCESS_STATUS = Annotated[int, Field(ge=200, le=299)]


class PerRecordResultsSettings(_Strict):
    """Where a 207-style answer lists each record's outcome, so records are acknowledged one by one."""

    statuses: Annotated[list[_SUCCESS_STATUS], Field(min_length=1)] = [207]
    path: str = "results"
    id_field: Annotated[str, Field(min_length=1)] = "Id"
    status_field: Annotated[str, Field(min_length=1)] = "status"
    accepted: Annotated[list[int | str], Field(min_length=1)] = [200, 201, "ok"]


class AcknowledgementSettings(_Strict):
    """Which 2xx answers acknowledge a batch; any other 2xx tracks nothing (a login page, a proxy's)."""

    statuses: Annotated[list[_SUCCESS_STATUS], Field(min_length=1)] = [200, 201, 202, 204]
    content_types: Annotated[list[Annotated[str, Field(pattern=_MEDIA_TYPE)]], Field(min_length=1)] = [
        "application/json"
    ]
    results: PerRecordResultsSettings | None = None

    @model_validator(mode="after")
    def _per_record_statuses_are_their_own(self) -> AcknowledgementSettings:
        shared = sorted(set(self.statuses) & set(self.results.statuses if self.results else []))
        if shared:
            raise ValueError(
                f"api.acknowledgement.results.statuses: {shared} also in api.acknowledgement.statuses; "
                "a status acknowledges either the whole batch or record by record"
            )
        return self


class ApiKeyHeaderAuth(_Strict):
    """The secret (SYNC_API_KEY) in the header `api.api_key_header`: the default."""

    kind: Literal["api_key_header"] = "api_key_header"


class BearerAuth(_Strict):
    """The secret (SYNC_API_KEY) as `Authorization: Bearer <secret>`."""

    kind: Literal["bearer"]


class BasicAuth(_Strict):
    """HTTP Basic: the user `username`, its password the secret (`api.api_key_env_var`)."""

    kind: Literal["basic"]
    username: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^:\s]+$")]


class ApiSettings(_Strict):
    """Where the third-party API is and how it is called."""

    protocol: Literal["rest", "praxedo"] = "rest"
    """rest: records POSTed and PUT as JSON; praxedo: as Praxedo's manager operations (connectors/praxedo)."""
    base_url: str | None = None
    """Required, unless the sync runs per customer: each customer's own base URL is used then."""
    auth: Annotated[ApiKeyHeaderAuth | BearerAuth | BasicAuth, Field(discriminator="kind")] = ApiKeyHeaderAuth()
    api_key_header: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9-]+$")] = "X-API-Key"
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    call_deadline_seconds: Annotated[float, Field(gt=0, le=3600)] | None = None
    verify_tls: bool = True
    max_in_flight: Annotated[int, Field(ge=1, le=8)] = 1
    max_details_in_flight: Annotated[int, Field(ge=1, le=32)] = 4
    """GETs of the rows' details (a workflow's export each) at once, within the API's rate limit."""
    acknowledgement: AcknowledgementSettings = AcknowledgementSettings()
    api_key_env_var: _ENV_VAR_NAME = API_KEY_ENV_VAR
    """The environment variable holding the API's secret (key or token)."""

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @model_validator(mode="after")
    def _key_header_only_with_its_auth(self) -> ApiSettings:
        if self.auth.kind != "api_key_header" and "api_key_header" in self.model_fields_set:
            raise ValueError(
                f"api.api_key_header: only read when api.auth.kind is api_key_header, not {self.auth.kind}; remove it"
            )
        return self

    @model_validator(mode="after")
    def _praxedo_speaks_basic(self) -> ApiSettings:
        if self.protocol == "praxedo" and self.auth.kind != "basic":
            raise ValueError(
                f"api.auth.kind: {self.auth.kind} is not how this product calls Praxedo; use basic (its "
                "web-service user and password)"
            )
        if self.auth.kind == "basic" and self.protocol != "praxedo":
            raise ValueError("api.auth.kind: basic is only read with api.protocol praxedo")
        return self

    @property
    def deadline_seconds(self) -> float:
        """Most seconds one whole call (connect, send, receive) may take: the deadline, else the timeout."""
        return self.call_deadline_seconds or self.timeout_seconds


class ScheduleSettings(_Strict):
    """When the nightly run starts."""

    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, value: str) -> str:
        try:
            dg.ScheduleDefinition(name="validate", cron_schedule=value, target=dg.AssetSelection.all())
        except dg.DagsterInvalidDefinitionError:
            raise ValueError("must be a standard 5-field cron expression, e.g. '0 3 * * *'") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_is_known(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name, e.g. 'UTC' or 'Asia/Jakarta'") from None
        return value


class SchedulerLogSettings(_Strict):
    """The constant columns of every SchedulerLog row this job writes."""

    application_name: Annotated[str, Field(min_length=1, max_length=100)] = "TAMHR"
    log_id: Annotated[str, Field(min_length=1, max_length=100)] = "SYNC_PIPELINE"
    log_category: Annotated[str, Field(min_length=1, max_length=100)] = "Scheduler"
    application_module: Annotated[str, Field(min_length=1, max_length=100)] = "ThirdPartySync"
    created_by: Annotated[str, Field(min_length=1, max_length=100)] = "sync_pipeline"
    ip_host_name: Annotated[str, Field(min_length=1, max_length=100)] = Field(default_factory=socket.gethostname)

    def columns(self) -> dict[str, str]:
        """The SchedulerLog columns these settings fill, by column name."""
        return {
            "ApplicationName": self.application_name,
            "LogID": self.log_id,
            "LogCategory": self.log_category,
            "ApplicationModule": self.application_module,
            "IPHostName": self.ip_host_name,
            "CreatedBy": self.created_by,
        }


class AssetSettings(_Strict):
    """Who owns the sync assets and how they are tagged in the Dagster UI (the `assets:` settings)."""

    owners: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _dagster_accepts_them(self) -> AssetSettings:
        try:
            dg.AssetSpec("validate", owners=list(self.owners), tags=dict(self.tags))
        except (dg.DagsterInvalidDefinitionError, dg.DagsterError) as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise ValueError(
                f"owners must be e-mail addresses or 'team:<name>', tag keys and values short "
                f"identifiers ({first_line})"
            ) from None
        return self


class RetrySettings(_Strict):
    """How a call that failed transiently (connection, timeout, 408/429/5xx) is retried within a run, and how
    many runs a record sent on its own call may fail before it is dead-lettered."""

    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    initial_delay_seconds: Annotated[float, Field(ge=0, le=600)] = 1.0
    max_delay_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    max_total_wait_seconds: Annotated[float, Field(ge=0, le=7200)] = 300.0
    max_record_attempts: Annotated[int, Field(ge=1, le=1000)] = 10
    """Runs a record of a per-record sink (http_records) may be refused or fail after its retries; then it is
    dead-lettered: kept in TB_R_SYNC_REJECTED, no longer sent until `sync-pipeline resend` re-queues it."""


class RejectionSettings(_Strict):
    """How a batch the API refuses with 400/413/422 is split to isolate the bad records, and at what cost."""

    max_split_depth: Annotated[int, Field(ge=0, le=20)] = 12
    max_calls_per_batch: Annotated[int, Field(ge=1, le=100_000)] = 100


class LockSettings(_Strict):
    """The per-entity lock in the Log database that keeps two syncs from sending the same records."""

    lease_seconds: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    wait_seconds: Annotated[float, Field(ge=0, le=86_400)] = 0.0


class ProgressSettings(_Strict):
    """How often a running entity logs how far it is (the `progress:` settings), so a long one can be watched."""

    interval_seconds: Annotated[float, Field(ge=0, le=86_400)] = 10.0
    """Seconds between two progress lines of one entity; 0 logs none and counts nothing."""


class AlertSettings(_Strict):
    """When the alert sensor speaks up, and where its run links point (the `alerts:` settings)."""

    consecutive_failures: Annotated[int, Field(ge=1, le=100)] = 3
    failed_call_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.05
    failed_call_window_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 60
    max_run_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 30
    max_throttled_calls: Annotated[int, Field(ge=0, le=1000)] = 100
    """Calls answered 429 (rate limited) in `failed_call_window_minutes` above which an alert is raised."""
    max_queued_runs: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """Queued runs of the sync's job above which an alert is raised (a per-customer sync queues one per customer)."""
    record_failures: Annotated[int, Field(ge=1, le=1000)] = 3
    """Runs in a row a record was refused (TB_R_SYNC_REJECTED's count) from which an alert names it."""
    ui_base_url: str = "http://127.0.0.1:3000"

    _ui_base_url = field_validator("ui_base_url")(check_http_url)

    def run_url(self, run_id: str) -> str:
        """The Dagster UI page of a run."""
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}"


def _qualified_table_name(value: str | None) -> str | None:
    if value is not None and (not all(_IDENTIFIER.match(part) for part in value.split(".")) or value.count(".") > 1):
        raise ValueError("must be a table name, optionally with its schema: 'dbo.TB_M_USER'")
    return value


class CustomersSettings(_Strict):
    """A sync run once per customer (one Dagster partition each): where the customers and their encrypted
    credentials are kept, and the variable holding the key that decrypts them."""

    connector: Literal["zuora"] = "zuora"
    db: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    """The database key (in `databases`) of the database holding the customers table."""
    secret_key_env_var: _ENV_VAR_NAME = "ZUORA_SECRET_KEY"
    """The environment variable holding the Fernet key of the customers' client secrets."""
    token_expiry_margin_seconds: Annotated[float, Field(ge=0, le=3600)] = 60.0
    sensor_interval_seconds: Annotated[int, Field(ge=10, le=86_400)] = 60
    """How often the partitions are brought in step with the active customers."""
    retry_delays_seconds: Annotated[list[Annotated[float, Field(ge=0, le=86_400)]], Field(max_length=10)] = Field(
        default_factory=lambda: [60.0, 300.0, 900.0]
    )
    """A customer's run that stopped for a passing cause (down, busy, locked) is tried again after each of
    these waits in turn; one refused (credentials, a 4xx) is not."""
    simulator: Annotated[str, Field(pattern=r"^(127\.0\.0\.1|localhost):[0-9]{1,5}$")] | None = None
    """host:port of a local simulator accepted over http (the demo and the tests); never in production."""


class RetentionSettings(ScheduleSettings):
    """How long the sync's logs are kept and when the job purging older rows runs (the `retention:` settings)."""

    days: Annotated[int, Field(ge=1, le=3650)] = 90
    """Rows older than this many days are purged: the sync's credential use and SchedulerLog rows."""
    cron: str = "30 3 * * *"


FIRST_WINDOW_DAYS = 30.0
"""How far back a windowed search reads before it has a mark, unless its entity's settings say."""
_API_NAME = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]


class EntitySettings(_Strict):
    """Where one entity lives in this deployment: the table it is read from (a database source), the
    endpoint it is read from or sent to (the HTTP API), the table it is written to (a SQL sink)."""

    table: str | None = None
    key_column: str = "Id"
    endpoint: Annotated[str, Field(min_length=1)] | None = None
    target_table: str | None = None
    batch_size: Annotated[int, Field(ge=1, le=100_000)] | None = None
    source_endpoint: Annotated[str, Field(min_length=1)] | None = None
    """Where its HTTP source reads, when not at `endpoint` (which its HTTP sink then sends to)."""
    source_api: _API_NAME | None = None
    sink_api: _API_NAME | None = None
    """The API (in `apis`) its HTTP source reads from, its HTTP sink sends to; unset: the sync's `api`."""
    lookback_seconds: Annotated[float, Field(ge=0, le=30 * 86_400)] = 0.0
    """A since-cursor's read starts this long before its mark: rows a late commit stamped before it are read."""
    first_window_days: Annotated[float, Field(gt=0, le=3650)] | None = None
    """How far back a windowed search reads before it has a mark (unset: `FIRST_WINDOW_DAYS`)."""

    _tables = field_validator("table", "target_table")(_qualified_table_name)

    def apis_called(self, spec: EntitySpec) -> list[str | None]:
        """The APIs the entity calls, by name in `apis` (None: the sync's `api`): its source's, its sink's."""
        called: list[str | None] = []
        if spec.http_source is not None or (spec.sql_sink is not None and spec.sql_sink.details is not None):
            called.append(self.source_api)
        if spec.sql_sink is None:
            called.append(self.sink_api)
        return list(dict.fromkeys(called))

    @property
    def schema_name(self) -> str | None:
        """The schema part of `table`, if one was given."""
        return split_table_name(self.table or "")[0]

    @property
    def table_name(self) -> str:
        """The table part of `table`, without its schema."""
        return split_table_name(self.table or "")[1]


def endpoint_url(base_url: str, endpoint: str) -> str:
    """An endpoint relative to a base URL taken as a folder, whether or not it ends in `/`: `https://h/v1`
    + `users` is `https://h/v1/users`, not urljoin's `https://h/users`."""
    return urljoin(base_url if base_url.endswith("/") else base_url + "/", endpoint)


def split_table_name(qualified: str) -> tuple[str | None, str]:
    """`dbo.T` -> ("dbo", "T"), `T` -> (None, "T")."""
    schema, _, name = qualified.rpartition(".")
    return schema or None, name


class Settings(_Strict):
    """The whole settings file."""

    api: ApiSettings | None = None
    """The sync's HTTP API; required when an entity reads from it or sends to it."""
    apis: dict[_API_NAME, ApiSettings] = Field(default_factory=dict)
    """More APIs by name (CHR's beside Praxedo), for entities naming one as `source_api` or `sink_api`."""
    customers: CustomersSettings | None = None
    """Set: the sync runs once per customer, with each customer's API base URL and credentials."""
    retention: RetentionSettings | None = None
    """Set: a scheduled job purges the sync's logs older than `retention.days` (see `retention_in_force`)."""
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 3000
    schedule: ScheduleSettings = ScheduleSettings()
    scheduler_log: SchedulerLogSettings = Field(default_factory=SchedulerLogSettings)
    assets: AssetSettings = Field(default_factory=AssetSettings)
    retries: RetrySettings = RetrySettings()
    rejections: RejectionSettings = RejectionSettings()
    locking: LockSettings = LockSettings()
    progress: ProgressSettings = ProgressSettings()
    alerts: AlertSettings = AlertSettings()
    databases: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], _ENV_VAR_NAME] = Field(
        default_factory=lambda: dict(DATABASE_URL_ENV_VARS)
    )
    entities: dict[str, EntitySettings]

    @model_validator(mode="after")
    def _lease_outlives_one_attempt(self) -> Settings:
        # The lease is extended before a call once a quarter of it has passed, so three quarters
        # of it must cover one whole call (bounded by its deadline), the rate-limit wait inside that
        # call and the retry wait after it (each at most retries.max_delay_seconds).
        deadline = self.api.deadline_seconds if self.api else 0.0
        needed = (deadline + 2 * self.retries.max_delay_seconds) * 4 / 3
        if self.locking.lease_seconds <= needed:
            call = (
                "api.call_deadline_seconds"
                if self.api and self.api.call_deadline_seconds
                else "api.timeout_seconds (api.call_deadline_seconds is not set)"
            )
            raise ValueError(
                f"locking.lease_seconds: must exceed 4/3 x ({call} + 2 x retries.max_delay_seconds) "
                f"= {needed:g}, or another run could take the lock while this one waits or calls "
                f"(got {self.locking.lease_seconds:g})"
            )
        return self

    @model_validator(mode="after")
    def _record_attempts_outlast_the_alert(self, info: ValidationInfo) -> Settings:
        attempts = self.retries.max_record_attempts
        per_record = any(spec.record_sink is not None for spec in sync_of(info).entities)
        if per_record and attempts < self.alerts.record_failures:
            raise ValueError(
                f"retries.max_record_attempts: must be at least alerts.record_failures "
                f"({self.alerts.record_failures}), so a failing record is alerted on before it is dead-lettered "
                f"(got {attempts})"
            )
        return self

    @model_validator(mode="after")
    def _api_when_called(self, info: ValidationInfo) -> Settings:
        calling = [spec.name for spec in sync_of(info).entities if spec.calls_the_api]
        if calling and self.api is None:
            raise ValueError(f"api: is required: {', '.join(calling)} read from or send to the API")
        batched = [
            spec.name
            for spec in sync_of(info).entities
            if spec.record_sink is None and spec.sql_sink is None and self._entity(spec.name).sink_api is None
        ]
        if self.api is not None and self.api.protocol == "praxedo":
            if batched:
                raise ValueError(
                    f"api.protocol: praxedo records go one call each; {', '.join(batched)} must have an http_records "
                    "sink"
                )
            if self.api.base_url is not None and urlsplit(self.api.base_url).query:
                raise ValueError("api.base_url: a Praxedo services URL has no query string")
            for name, entity in self.entities.items():
                spec = next((known for known in sync_of(info).entities if known.name == name), None)
                if spec is None:
                    continue  # an unknown entity: refused, named, by _entities_match_specs
                endpoint_api = entity.sink_api if spec.sql_sink is None else entity.source_api
                on_praxedo = (
                    ("endpoint", entity.endpoint if endpoint_api is None else None),
                    ("source_endpoint", entity.source_endpoint if entity.source_api is None else None),
                )
                for setting, endpoint in on_praxedo:
                    manager = (endpoint or "").rstrip("/").rsplit("/", 1)[-1]
                    if endpoint is not None and manager not in MANAGERS:
                        raise ValueError(
                            f"entities.{name}.{setting}: {endpoint!r} names no Praxedo manager; one of "
                            f"{', '.join(MANAGERS)}"
                        )
        if self.api is not None and self.api.base_url is None and self.customers is None:
            raise ValueError("api.base_url: is required (unless the sync runs per customer: customers:)")
        for name, extra in self.apis.items():
            if extra.protocol != "rest" or extra.base_url is None:
                raise ValueError(f"apis.{name}: another API is a REST API with its base_url (protocol rest)")
        if self.apis and self.customers is not None:
            raise ValueError("apis: a sync run per customer calls each customer's own API only; remove apis")
        if self.customers is not None and self.customers.db not in self.databases:
            raise ValueError(
                f"customers.db: {self.customers.db!r} is not in databases (the environment variable of its URL)"
            )
        return self

    @model_validator(mode="after")
    def _databases_cover_the_sync(self, info: ValidationInfo) -> Settings:
        needed = {LOG_DB, *(key for spec in sync_of(info).entities for key in spec.databases)}
        missing = sorted(needed - set(self.databases))
        if missing:
            raise ValueError(
                f"databases.{missing[0]}: is required (the environment variable holding its SQLAlchemy URL); "
                f"this sync reads {', '.join(sorted(needed))}"
            )
        return self

    @model_validator(mode="after")
    def _entities_match_specs(self, info: ValidationInfo) -> Settings:
        sync = sync_of(info)
        known = [spec.name for spec in sync.entities]
        unknown = sorted(set(self.entities) - set(known))
        if unknown:
            raise ValueError(f"entities.{unknown[0]}: is not a known entity; known: {', '.join(known)}")
        missing = [name for name in known if name not in self.entities]
        if missing:
            raise ValueError(f"entities: every entity needs settings; missing: {', '.join(missing)}")
        for name, entity in self.entities.items():
            spec = sync.entity(name)
            keys = [f.name for f in spec.fields if not f.nullable]
            if entity.key_column not in keys:
                nullable = entity.key_column in {f.name for f in spec.fields}
                why = "is a nullable field" if nullable else "is not a field"
                raise ValueError(
                    f"entities.{name}.key_column: {entity.key_column!r} {why} of {name}; the key must be a "
                    f"unique, non-nullable field; allowed: {', '.join(keys)}"
                )
            needs = {
                "table": spec.source_db is not None,
                "endpoint": spec.calls_the_api,
                "target_table": spec.sql_sink is not None,
            }
            for setting, needed in needs.items():  # what is missing first: it says what the entity is
                if needed and getattr(entity, setting) is None:
                    raise ValueError(f"entities.{name}.{setting}: is required for {name} ({_ROLES[setting][1]})")
            for setting, needed in needs.items():
                if not needed and getattr(entity, setting) is not None:
                    part = _ROLES[setting][0]
                    raise ValueError(f"entities.{name}.{setting}: not read, {name} has no {part}; remove it")
            _check_cursor_settings(name, entity, spec)
            self._check_entity_apis(name, entity, spec)
        return self

    def _check_entity_apis(self, name: str, entity: EntitySettings, spec: EntitySpec) -> None:
        """The APIs an entity names exist and fit its source and sink; its endpoints are http(s) URLs."""
        has_http_sink = spec.sql_sink is None
        for setting, api, allowed in (
            ("source_api", entity.source_api, spec.http_source is not None),
            ("source_endpoint", entity.source_endpoint, spec.http_source is not None),
            ("sink_api", entity.sink_api, has_http_sink),
        ):
            if api is not None and not allowed:
                raise ValueError(f"entities.{name}.{setting}: not read, {name} has no HTTP {setting.split('_')[0]}")
            if setting.endswith("_api") and api is not None and api not in self.apis:
                known = ", ".join(self.apis) or "none"
                raise ValueError(f"entities.{name}.{setting}: {api!r} is not one of apis ({known})")
        for setting, url in (("endpoint", self._url_of(name, False)), ("source_endpoint", self._url_of(name, True))):
            if url is not None:
                try:
                    check_http_url(url)
                except ValueError as exc:
                    shown = getattr(entity, setting) or entity.endpoint
                    raise ValueError(f"entities.{name}.{setting}: {_shown(shown)!r} {exc}") from None

    def _entity(self, name: str) -> EntitySettings:
        """An entity's settings; an entity without any (refused by `_entities_match_specs`) as the defaults."""
        return self.entities.get(name) or EntitySettings()

    def _url_of(self, entity: str, source: bool) -> str | None:
        """An entity's sink (or source) URL, None where it has no endpoint or its API no base URL."""
        where = self.entities[entity]
        endpoint = (where.source_endpoint or where.endpoint) if source else where.endpoint
        name = where.source_api if source else where.sink_api
        api = self.apis.get(name) if name else self.api
        if endpoint is None or api is None or api.base_url is None:
            return None
        return endpoint_url(api.base_url, endpoint)

    def source_url(self, entity: str) -> str:
        """The absolute URL an entity's HTTP source reads: `source_endpoint` (else `endpoint`) on its
        `source_api` (else `api`)."""
        url = self._url_of(entity, True)
        if url is None:
            raise SettingsError(f"entities.{entity}.endpoint: there is no base_url to resolve it against")
        return url

    def endpoint_url(self, entity: str) -> str:
        """The absolute URL an entity is sent to or read from: its endpoint, relative to `api.base_url` (or the
        base URL of its `sink_api`).

        The base is treated as a folder whether or not it ends in `/`, so `https://h/v1` + `users`
        is `https://h/v1/users`, not urljoin's `https://h/users`.
        """
        url = self._url_of(entity, False)
        if url is None:
            raise SettingsError(f"entities.{entity}.endpoint: there is no api.base_url to resolve it against")
        return url

    @property
    def retention_in_force(self) -> RetentionSettings | None:
        """The purge of the sync's logs: `retention` as set; for a sync run per customer, whose logs grow with every
        customer's run, the defaults when it is not set; for any other sync, none unless set (the TAMHR push's
        SchedulerLog rows are TAMHR's and stay as they always have)."""
        if self.retention is None and self.customers is not None:
            return RetentionSettings()
        return self.retention

    def batch_size_for(self, entity: str) -> int:
        """The entity's own batch size when it has one, else the global one."""
        return self.entities[entity].batch_size or self.batch_size


def _check_cursor_settings(name: str, entity: EntitySettings, spec: EntitySpec) -> None:
    """A lookback needs a since-cursor kept in a timestamp; a first window needs a windowed search."""
    cursor = spec.field(spec.cursor_field) if spec.cursor_field and spec.state is StateKind.SINCE_CURSOR else None
    if entity.lookback_seconds and (cursor is None or cursor.type is not FieldType.DATETIME):
        raise ValueError(
            f"entities.{name}.lookback_seconds: only read for a since_cursor entity whose cursor is a datetime "
            f"field; {name} has {'cursor ' + cursor.name + ' of type ' + cursor.type.value if cursor else 'no cursor'}"
        )
    windowed = spec.http_source is not None and spec.http_source.window is not None
    if entity.first_window_days is not None and not windowed:
        raise ValueError(f"entities.{name}.first_window_days: only read for a windowed search (source.window)")


_ROLES = {
    "table": ("database source", "the table it is read from"),
    "endpoint": ("HTTP source or sink", "the API endpoint it is read from or sent to"),
    "target_table": ("SQL sink", "the table its SQL sink writes"),
}
"""Each entity setting that only some entities need: the part of the entity that needs it, and what it is."""


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{location}: is required but missing"
    if error["type"] == "extra_forbidden":
        return f"{location}: is not a known setting"
    if not error["loc"]:  # a whole-file check: its message already names the setting
        return message
    return f"{location}: {message} (got {_shown(error['input'])!r})"


_URL_USERINFO = re.compile(r"//[^/@]*@")


def _shown(value: object) -> object:
    """A refused value as an error message may repeat it: with a URL's user:password@ masked."""
    return _URL_USERINFO.sub("//***@", value) if isinstance(value, str) else value


def sync_of(info: ValidationInfo) -> SyncSpec:
    """The sync whose settings are being validated: given by `parse_settings`, else the TAMHR push."""
    context = info.context or {}
    sync = context.get("sync", TAMHR_SYNC)
    assert isinstance(sync, SyncSpec)
    return sync


def parse_settings(raw: object, source: str = "settings", sync: SyncSpec = TAMHR_SYNC) -> Settings:
    """Validate an already-parsed YAML document as `sync`'s settings, turning pydantic's errors into readable ones."""
    if not isinstance(raw, dict):
        raise SettingsError(f"{source}: must be a YAML mapping at the top level")
    try:
        return Settings.model_validate(raw, context={"sync": sync})
    except ValidationError as exc:
        raise SettingsError(f"{source} is invalid:\n  {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """pydantic's errors, one line each, naming the setting, what is wrong and the value (URLs masked)."""
    return "\n  ".join(_describe(error) for error in exc.errors())


def settings_path() -> Path:
    """The settings file in force: `$SYNC_PIPELINE_SETTINGS`, else the packaged demo defaults."""
    configured = os.environ.get(SETTINGS_ENV_VAR)
    if configured is None:
        return DEFAULT_SETTINGS_PATH
    if not configured.strip():
        raise SettingsError(
            f"{SETTINGS_ENV_VAR} is set but empty: set it to the settings file's path, or unset it to use "
            f"the packaged demo settings"
        )
    return Path(configured)


def load_settings(path: Path | None = None, sync: SyncSpec = TAMHR_SYNC) -> Settings:
    """Read and validate `sync`'s settings file; every problem is reported with the setting's name."""
    path = path or settings_path()
    return parse_settings(read_settings_file(path), source=f"settings file {path}", sync=sync)


def read_settings_file(path: Path) -> object:
    """The YAML document of a settings file, not validated yet; a file that cannot be read is a `SettingsError`."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path} ({SETTINGS_ENV_VAR}): {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"settings file {path} ({SETTINGS_ENV_VAR}) is not UTF-8 text: byte {exc.start} cannot be decoded; "
            f"save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {path} is not valid YAML: {exc}") from None
    return raw
