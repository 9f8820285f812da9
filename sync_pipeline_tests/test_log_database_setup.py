"""What a new user trips over in the Log database and the connection URLs: each fails with a message
that names the variable or table and how to fix it, and stops only the entities it concerns."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest
import sqlalchemy as sa

from sync_pipeline.cli import main
from sync_pipeline.engine.tables import lock_table
from sync_pipeline.orchestration.resources import build_resources
from sync_pipeline.orchestration.sync_assets import CHECK_NAME, build_entity_assets
from sync_pipeline.resources.database import DatabaseUrlError, SyncDatabase, masked_url
from sync_pipeline.settings import Settings
from sync_pipeline.specs.tamhr import DATABASE_URL_ENV_VARS, TAMHR_ENTITIES, TAMHR_SYNC

from .conftest import EntitySync, SyncDatabases
from .fakes import RecordingApiClient

PASSWORD = "Secret@Pw_Tail99"
"""A password with an unencoded `@`, as people paste them."""


def test_masked_url_hides_everything_before_the_last_at_so_an_unencoded_at_leaks_nothing() -> None:
    masked = masked_url(f"postgresql+psycopg://sync:{PASSWORD}@db-host:5432/log")

    assert masked == "postgresql+psycopg://***@db-host:5432/log"


@pytest.mark.parametrize("password", ["Pw@Tail?Qz9", "Pw@Ta/il#Qz?9"])
def test_masked_url_hides_a_password_holding_an_at_and_a_question_mark_or_slash(password: str) -> None:
    url = f"postgresql+psycopg://sync:{password}@db-host:5432/log"

    masked = masked_url(url)

    assert masked == "postgresql+psycopg://***@db-host:5432/log"
    with pytest.raises(DatabaseUrlError) as refused:
        SyncDatabase(url=url, env_var="SYNC_LOG_DB_URL").get_engine()
    assert "Qz" not in str(refused.value) and "Tail" not in str(refused.value)


def test_masked_url_of_an_unparsable_url_keeps_only_its_scheme() -> None:
    assert masked_url(f"postgresql+psycopg://sync:{PASSWORD}@host:notaport/db").startswith("postgresql+psycopg://***")
    assert masked_url(PASSWORD) == "*** (not a URL)"


def test_a_password_with_an_unencoded_at_is_refused_naming_the_variable_and_the_fix() -> None:
    database = SyncDatabase(url=f"postgresql+psycopg://sync:{PASSWORD}@db-host/log", env_var="SYNC_LOG_DB_URL")

    with pytest.raises(DatabaseUrlError) as refused:
        database.get_engine()

    message = str(refused.value)
    assert "SYNC_LOG_DB_URL" in message and "%40" in message
    assert "Secret" not in message and "Tail99" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(f"postgresql+psycopg://sync:{PASSWORD.replace('@', '%40')}@h:notaport/db", "port", id="port"),
        pytest.param("postgresql+psycopg//sync:Secret_Tail99@h/db", "not a SQLAlchemy URL", id="unparsable"),
        pytest.param("nosuchdb://sync:Secret_Tail99@h/db", "Can't load plugin", id="unknown dialect"),
    ],
)
def test_a_malformed_url_is_refused_naming_the_variable_without_the_password(url: str, expected: str) -> None:
    with pytest.raises(DatabaseUrlError) as refused:
        SyncDatabase(url=url, env_var="SYNC_ESS_DB_URL").get_engine()

    message = str(refused.value)
    assert "SYNC_ESS_DB_URL" in message and expected in message
    assert "Secret" not in message and "Tail99" not in message


def test_a_database_that_cannot_be_opened_is_reported_naming_the_variable() -> None:
    engine = SyncDatabase(url="sqlite:////nonexistent/folder/ess.db", env_var="SYNC_ESS_DB_URL").get_engine()

    with pytest.raises(sa.exc.OperationalError) as failed:
        engine.connect()

    assert "SYNC_ESS_DB_URL (sqlite:////nonexistent/folder/ess.db): cannot connect" in str(failed.value)


@pytest.mark.parametrize(
    "bad_url",
    [
        pytest.param("postgresql+psycopg://sync:Secret_Tail99@127.0.0.1:notaport/ess", id="bad port"),
        pytest.param(f"postgresql+psycopg://sync:{PASSWORD}@127.0.0.1/ess", id="unencoded @"),
        pytest.param("sqlite:////nonexistent/folder/ess.db", id="cannot be opened"),
    ],
)
def test_a_bad_ess_url_stops_only_events_calendar_and_the_default_entities_still_send(
    databases: SyncDatabases, settings: Settings, monkeypatch: pytest.MonkeyPatch, bad_url: str
) -> None:
    for spec in TAMHR_ENTITIES:
        databases.insert_rows(spec.name, 5)
    for key, env_var in DATABASE_URL_ENV_VARS.items():
        monkeypatch.setenv(env_var, bad_url if key == "ess_db" else databases.urls[key])
    result = dg.materialize(
        build_entity_assets(TAMHR_SYNC, settings),
        resources={**build_resources(TAMHR_SYNC, settings), "sync_api": RecordingApiClient()},
        raise_on_error=False,
    )

    assert [e.step_key for e in result.all_events if e.is_step_success] == [
        "users",
        "actual_org",
        "actual_entity",
        "org_object",
    ], "a bad URL of one database stops only its entities; the run then fails, naming it"
    checks = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations() if e.check_name == CHECK_NAME}
    assert [name for name, check in checks.items() if check.passed] == [
        "users",
        "actual_org",
        "actual_entity",
        "org_object",
    ]
    stopped = str(checks["events_calendar"].description)
    assert "SYNC_ESS_DB_URL" in stopped
    assert "Secret" not in stopped and "Tail99" not in stopped
    sent = {
        event.asset_key.path[-1]: event.materialization.metadata["sent"].value
        for event in result.get_asset_materialization_events()
        if event.asset_key is not None and event.materialization is not None
    }
    assert sent == {"users": 5, "actual_org": 5, "actual_entity": 5, "org_object": 5, "events_calendar": 0}


def test_a_missing_lock_table_stops_the_entity_naming_the_table_and_how_to_create_it(
    databases: SyncDatabases, run_sync: EntitySync, api: RecordingApiClient, settings: Settings
) -> None:
    databases.insert_rows("Users", 3)
    lock_table.drop(databases.log)

    report = run_sync("Users")

    assert report.stopped_because is not None
    assert "Log table TB_R_SYNC_LOCK does not exist in the Log database" in report.stopped_because
    assert "sql/mssql/TB_R_SYNC_LOCK.sql" in report.stopped_because
    assert "`sync-pipeline ddl sqlite`" in report.stopped_because
    assert api.calls(settings.endpoint_url("Users")) == []


def test_the_logs_command_without_its_environment_says_which_command_sets_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV_VARS["log_db"], raising=False)

    assert main(["logs"]) == 2

    error = capsys.readouterr().err
    assert 'eval "$(.venv/bin/sync-pipeline env)"' in error and "SYNC_LOG_DB_URL" in error


def test_the_logs_command_reports_a_bad_port_in_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV_VARS["log_db"], "postgresql+psycopg://sync:Secret_Tail99@h:notaport/log")

    assert main(["logs"]) == 2

    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "SYNC_LOG_DB_URL" in error and "port" in error
    assert "Traceback" not in error and "Secret" not in error


@pytest.mark.parametrize("unused", ["pandas", "authlib"], ids=["reports only", "per-customer syncs only"])
def test_loading_the_code_location_does_not_load_what_its_runs_do_not_use(unused: str) -> None:
    code = (
        "import sys, sync_pipeline.orchestration.sync_assets, sync_pipeline.definitions; "
        f"print({unused!r} in sys.modules)"
    )

    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert loaded.strip() == "False"
