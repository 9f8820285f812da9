"""The settings file: the packaged defaults load, and every bad value is refused by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from sync_pipeline.settings import (
    DEFAULT_SETTINGS_PATH,
    SETTINGS_ENV_VAR,
    SettingsError,
    load_settings,
    parse_settings,
    settings_path,
)

from .conftest import raw_default_settings

Mutation = Callable[[dict[str, Any]], None]


def test_the_packaged_default_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SETTINGS_ENV_VAR, raising=False)

    settings = load_settings()

    assert settings_path() == DEFAULT_SETTINGS_PATH
    assert list(settings.entities) == ["Users", "ActualOrg", "ActualEntity", "OrgObject", "EventsCalendar"]
    assert settings.batch_size == 3000
    assert (settings.schedule.cron, settings.schedule.timezone) == ("0 3 * * *", "UTC")
    assert settings.endpoint_url("Users") == "http://127.0.0.1:8765/api/sync/users"


def test_the_settings_file_named_by_the_environment_variable_is_the_one_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = raw_default_settings()
    raw["batch_size"] = 250
    path = tmp_path / "tamhr.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    monkeypatch.setenv(SETTINGS_ENV_VAR, str(path))

    assert load_settings().batch_size == 250


def test_a_missing_settings_file_is_reported_with_its_path_and_the_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere.yaml"
    monkeypatch.setenv(SETTINGS_ENV_VAR, str(missing))

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert str(missing) in str(raised.value)
    assert SETTINGS_ENV_VAR in str(raised.value)


def test_a_settings_file_that_is_not_yaml_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("api: [unclosed\n", encoding="utf-8")

    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(path)


def test_a_settings_file_that_is_a_list_is_refused() -> None:
    with pytest.raises(SettingsError, match="mapping"):
        parse_settings(["api", "entities"])


def setting(path: str, value: object) -> Mutation:
    """Set the dotted `path` of the raw settings to `value`."""
    *parents, last = path.split(".")

    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value

    return mutate


def drop_entity(name: str) -> Mutation:
    """Remove one entity's settings."""
    return lambda raw: raw["entities"].pop(name)


def add_entity(name: str) -> Mutation:
    """Add settings for an entity no spec describes."""
    return lambda raw: raw["entities"].__setitem__(name, {"table": "TB_M_FOO", "endpoint": "foo"})


BAD_SETTINGS = [
    pytest.param(setting("batch_size", 0), ["batch_size", "got 0"], id="batch_size 0"),
    pytest.param(setting("batch_size", -1), ["batch_size", "got -1"], id="batch_size -1"),
    pytest.param(setting("batch_size", "abc"), ["batch_size", "'abc'"], id="batch_size abc"),
    pytest.param(setting("batch_size", 100_001), ["batch_size", "100001"], id="batch_size too big"),
    pytest.param(setting("entities.Users.batch_size", 0), ["entities.Users.batch_size", "got 0"], id="entity batch"),
    pytest.param(setting("schedule.cron", "61 * * * *"), ["schedule.cron", "'61 * * * *'"], id="cron minute 61"),
    pytest.param(setting("schedule.cron", "at three"), ["schedule.cron", "'at three'"], id="cron words"),
    pytest.param(setting("schedule.timezone", "Mars/Base"), ["schedule.timezone", "'Mars/Base'"], id="timezone"),
    pytest.param(setting("api.base_url", "ftp://x"), ["api.base_url", "'ftp://x'", "http"], id="ftp base_url"),
    pytest.param(
        setting("api.base_url", "https://u:p@h/x"),
        ["api.base_url", "'https://***@h/x'", "credentials"],
        id="base_url with credentials",
    ),
    pytest.param(
        setting("entities.Users.endpoint", "https://u:p@h/x"),
        ["entities.Users.endpoint", "'https://***@h/x'", "credentials"],
        id="endpoint with credentials",
    ),
    pytest.param(
        add_entity("Payroll"), ["entities.Payroll: is not a known entity", "Users, ActualOrg"], id="unknown entity"
    ),
    pytest.param(drop_entity("EventsCalendar"), ["entity needs settings", "missing: EventsCalendar"], id="missing"),
    pytest.param(
        setting("entities.Users.key_column", "UserKey"),
        ["entities.Users.key_column", "'UserKey'", "allowed: Id, NoReg"],
        id="key_column not a field",
    ),
    pytest.param(setting("api.timeout_seconds", 0), ["api.timeout_seconds", "got 0"], id="timeout 0"),
    pytest.param(setting("api.api_key_header", "X API Key"), ["api.api_key_header", "'X API Key'"], id="header"),
    pytest.param(setting("colour", "blue"), ["colour", "not a known setting"], id="unknown top-level key"),
    pytest.param(setting("api.retries", 3), ["api.retries", "not a known setting"], id="unknown api key"),
    pytest.param(
        setting("entities.Users.table", "TB M USER"), ["entities.Users.table", "'TB M USER'"], id="table with spaces"
    ),
    pytest.param(
        setting("entities.Users.table", "TB_M_USER;DROP TABLE x"),
        ["entities.Users.table", "'TB_M_USER;DROP TABLE x'"],
        id="table with semicolon",
    ),
    pytest.param(
        setting("entities.Users.table", "db.dbo.TB_M_USER"), ["entities.Users.table", "'db.dbo.TB_M_USER'"], id="3-part"
    ),
    pytest.param(setting("api", None), ["api"], id="api missing"),
    pytest.param(setting("schedule.enabled", "yes"), ["schedule.enabled", "'yes'"], id="enabled not a bool"),
    pytest.param(setting("api.call_deadline_seconds", 0), ["api.call_deadline_seconds", "got 0"], id="deadline 0"),
    pytest.param(
        setting("api.acknowledgement", {"statuses": [200, 302]}),
        ["api.acknowledgement.statuses.1", "got 302"],
        id="acknowledging status not a 2xx",
    ),
    pytest.param(
        setting("api.acknowledgement", {"content_types": ["JSON please"]}),
        ["api.acknowledgement.content_types.0", "'JSON please'"],
        id="content type not a media type",
    ),
    pytest.param(
        setting("api.acknowledgement", {"statuses": [200, 207], "results": {"path": "results"}}),
        ["api.acknowledgement.results.statuses: [207] also in api.acknowledgement.statuses"],
        id="207 both whole-batch and per-record",
    ),
    pytest.param(
        setting("rejections", {"max_calls_per_batch": 0}), ["rejections.max_calls_per_batch", "got 0"], id="no calls"
    ),
    pytest.param(
        setting("retries", {"max_record_attempts": 0}), ["retries.max_record_attempts", "got 0"], id="record attempts 0"
    ),
    pytest.param(
        setting("retries", {"max_record_attempts": 1001}),
        ["retries.max_record_attempts", "less than or equal to 1000", "got 1001"],
        id="record attempts too many",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), BAD_SETTINGS)
def test_a_bad_setting_is_refused_naming_the_setting_and_the_bad_value(mutate: Mutation, expected: list[str]) -> None:
    raw = raw_default_settings()
    mutate(raw)

    with pytest.raises(SettingsError) as raised:
        parse_settings(raw, source="tamhr.yaml")

    message = str(raised.value)
    assert message.startswith("tamhr.yaml is invalid")
    for fragment in expected:
        assert fragment in message


def test_a_required_setting_that_is_absent_is_named_as_missing() -> None:
    raw = raw_default_settings()
    del raw["entities"]

    with pytest.raises(SettingsError, match=r"entities: is required but missing"):
        parse_settings(raw)

    raw = raw_default_settings()
    del raw["api"]["base_url"]
    with pytest.raises(SettingsError, match=r"api\.base_url: is required \(unless the sync runs per customer"):
        parse_settings(raw)


def test_a_cross_field_error_does_not_repeat_the_whole_settings_file() -> None:
    raw = raw_default_settings()
    raw["entities"]["Users"]["key_column"] = "UserKey"

    with pytest.raises(SettingsError) as raised:
        parse_settings(raw)

    assert "base_url" not in str(raised.value)
    assert "(top level)" not in str(raised.value)


def test_a_relative_endpoint_is_joined_to_the_base_url_and_an_absolute_one_is_kept() -> None:
    raw = raw_default_settings()
    raw["api"]["base_url"] = "https://api.example.com/tamhr/v1/"
    raw["entities"]["Users"]["endpoint"] = "users"
    raw["entities"]["ActualOrg"]["endpoint"] = "https://org.example.net/hooks/actual-org"

    settings = parse_settings(raw)

    assert settings.endpoint_url("Users") == "https://api.example.com/tamhr/v1/users"
    assert settings.endpoint_url("ActualOrg") == "https://org.example.net/hooks/actual-org"


def test_a_base_url_without_a_trailing_slash_keeps_its_last_path_segment() -> None:
    raw = raw_default_settings()
    raw["api"]["base_url"] = "https://api.example.com/tamhr/v1"

    assert parse_settings(raw).endpoint_url("Users") == "https://api.example.com/tamhr/v1/users"


def test_an_entity_batch_size_overrides_the_global_one_for_that_entity_only() -> None:
    raw = raw_default_settings()
    raw["batch_size"] = 2500
    raw["entities"]["EventsCalendar"]["batch_size"] = 500

    settings = parse_settings(raw)

    assert settings.batch_size_for("EventsCalendar") == 500
    assert settings.batch_size_for("Users") == 2500


@pytest.mark.parametrize("path", ["api.base_url", "entities.Users.endpoint", "alerts.ui_base_url"])
def test_a_url_refused_for_carrying_credentials_does_not_repeat_them(path: str) -> None:
    raw = {"alerts": {}, **raw_default_settings()}
    setting(path, "https://svc:TOPSECRET@h/x")(raw)

    with pytest.raises(SettingsError) as raised:
        parse_settings(raw)

    assert "credentials" in str(raised.value) and "TOPSECRET" not in str(raised.value)


def test_the_whole_call_deadline_must_fit_in_the_lease_with_a_wait_and_is_named_when_it_does_not() -> None:
    raw = raw_default_settings()
    raw["api"]["call_deadline_seconds"] = 500
    raw["locking"] = {"lease_seconds": 600}

    with pytest.raises(SettingsError) as raised:
        parse_settings(raw, source="tamhr.yaml")

    message = str(raised.value)
    expected = "locking.lease_seconds: must exceed 4/3 x (api.call_deadline_seconds + 2 x retries.max_delay_seconds)"
    assert expected in message
    assert "= 826.667" in message and "got 600" in message


def test_without_a_call_deadline_a_whole_call_is_bounded_by_the_timeout() -> None:
    raw = raw_default_settings()
    assert parse_settings(raw).api.deadline_seconds == 30

    raw["api"]["call_deadline_seconds"] = 120
    assert parse_settings(raw).api.deadline_seconds == 120


def test_by_default_only_a_200_201_202_or_204_with_a_json_body_acknowledges_a_batch() -> None:
    acknowledgement = parse_settings(raw_default_settings()).api.acknowledgement

    assert (acknowledgement.statuses, acknowledgement.content_types) == ([200, 201, 202, 204], ["application/json"])
    assert acknowledgement.results is None


def test_an_empty_settings_variable_is_refused_naming_it_rather_than_loading_the_demo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SETTINGS_ENV_VAR, "")

    with pytest.raises(SettingsError, match=f"{SETTINGS_ENV_VAR} is set but empty"):
        load_settings()


def test_a_settings_file_that_is_not_utf8_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump(raw_default_settings()).encode() + "# Bogotá\n".encode("latin-1"))

    with pytest.raises(SettingsError) as raised:
        load_settings(path)

    assert str(path) in str(raised.value) and "not UTF-8" in str(raised.value)


@pytest.mark.parametrize(("entity", "column"), [("Users", "Email"), ("OrgObject", "ObjectText")])
def test_a_nullable_field_is_refused_as_key_column_naming_the_fields_allowed(entity: str, column: str) -> None:
    raw = raw_default_settings()
    raw["entities"][entity]["key_column"] = column

    with pytest.raises(SettingsError) as raised:
        parse_settings(raw)

    message = str(raised.value)
    assert f"entities.{entity}.key_column: {column!r} is a nullable field of {entity}" in message
    assert "allowed: Id" in message and column not in message.split("allowed:")[1]


EXAMPLE_SETTINGS_PATH = DEFAULT_SETTINGS_PATH.with_name("settings.example.yaml")


def unset_by_default(model: type[BaseModel], name: str) -> bool:
    """A field the example may leave commented out: no value by default, or one that depends on the host."""
    field = model.model_fields[name]
    return field.default is None or name == "ip_host_name"


def test_the_production_example_holds_every_setting_with_its_default_and_loads() -> None:
    text = EXAMPLE_SETTINGS_PATH.read_text(encoding="utf-8")
    example = yaml.safe_load(text)
    parsed = load_settings(EXAMPLE_SETTINGS_PATH)
    defaults = parse_settings({"api": {"base_url": "https://h/"}, "entities": example["entities"]})
    missing: list[str] = []

    def compare(model: BaseModel, default: BaseModel, raw: dict[str, Any], prefix: str) -> None:
        for name in type(model).model_fields:
            path = f"{prefix}{name}"
            if name not in raw:
                if not (unset_by_default(type(model), name) and f"# {name}:" in text):
                    missing.append(path)
                continue
            value, default_value = getattr(model, name), getattr(default, name)
            if isinstance(value, BaseModel) and isinstance(default_value, BaseModel):
                compare(value, default_value, raw[name], f"{path}.")
            elif path not in ("api.base_url", "entities") and value != default_value:
                missing.append(f"{path} (example {value!r}, default {default_value!r})")

    compare(parsed, defaults, example, "")
    assert missing == []
    assert "mssql+pyodbc://" in text


def test_the_tamhr_push_sends_no_record_alone_so_record_attempts_below_the_alert_are_not_its_concern() -> None:
    raw = raw_default_settings()
    raw["alerts"] = {**raw.get("alerts", {}), "record_failures": 20}

    assert parse_settings(raw).retries.max_record_attempts == 10
