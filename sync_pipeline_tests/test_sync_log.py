"""The sync log viewer: SchedulerLog rows as written by the engine, pending records, the entity summary, the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from sync_pipeline.cli import main
from sync_pipeline.engine.audit.log_queries import (
    LogQuery,
    call_counts,
    call_counts_query,
    entity_summary,
    log_rows,
    log_rows_query,
    pending_count,
    referenced_entities,
    rejected_untracked_query,
)
from sync_pipeline.engine.audit.scheduler_log import ApiCall, SchedulerLogWriter
from sync_pipeline.engine.entity_sync import EntitySyncPlan
from sync_pipeline.engine.state.change_history import ChangedRow, ChangeHistory, ConflictingRow
from sync_pipeline.engine.state.dead_letters import DeadLetters
from sync_pipeline.engine.state.tracking import Rejection, TrackingStore
from sync_pipeline.engine.tables import scheduler_log_table
from sync_pipeline.log_viewer import log_frame, pending_frame, render
from sync_pipeline.orchestration.sync_assets import entity_plan
from sync_pipeline.settings import SETTINGS_ENV_VAR, Settings
from sync_pipeline.specs.tamhr import DATABASE_URL_ENV_VARS, ENTITIES_BY_NAME, TAMHR_SYNC

from .conftest import EntitySync, SyncDatabases, entity_id

NOW = dt.datetime(2024, 6, 1, 3, 0, 0)
USERS_URL = "http://127.0.0.1:8765/api/sync/users"


def entity_id_of(entity: str, number: int) -> str:
    """The canonical EntityId of row `number` of an entity in the test data."""
    return str(entity_id(ENTITIES_BY_NAME[entity], number))


def minutes_ago(minutes: float) -> dt.datetime:
    """A CreatedOn `minutes` before NOW (naive UTC, as SchedulerLog holds it)."""
    return NOW - dt.timedelta(minutes=minutes)


def write_call(
    databases: SyncDatabases,
    settings: Settings,
    entity: str,
    when: dt.datetime,
    status: int | None = 200,
    error: str | None = None,
    batch_size: int = 3,
) -> None:
    """One SchedulerLog row, written by the engine's own writer at a chosen time."""
    call = ApiCall(USERS_URL, batch_size, status, duration_ms=12, error=error)
    row = SchedulerLogWriter(settings.scheduler_log.columns()).row(entity, call, now=when)
    with databases.log.begin() as conn:
        conn.execute(sa.insert(scheduler_log_table), row)


def write_foreign_row(databases: SyncDatabases, settings: Settings, when: dt.datetime) -> None:
    """A row another TAMHR application wrote to the shared SchedulerLog."""
    row = SchedulerLogWriter(settings.scheduler_log.columns()).row("Users", ApiCall(USERS_URL, 1, 500, 1, "x"), when)
    row["Activity"] = "Payroll Export"
    with databases.log.begin() as conn:
        conn.execute(sa.insert(scheduler_log_table), row)


def reject(databases: SyncDatabases, entity: str, entity_ids: list[str]) -> None:
    """TB_R_SYNC_REJECTED rows, as the engine leaves them for records the API refused."""
    store = TrackingStore(databases.log, SchedulerLogWriter({}))
    store.record_rejected(entity, [Rejection(eid, 422, "bad email") for eid in entity_ids])


def logged_statuses(databases: SyncDatabases) -> list[str]:
    """The Status of every SchedulerLog row written so far."""
    with databases.log.connect() as conn:
        return list(conn.execute(sa.select(scheduler_log_table.c.Status)).scalars())


def test_successful_reads_are_logged_with_the_next_write_in_one_commit_and_a_failed_one_at_once(
    databases: SyncDatabases, settings: Settings
) -> None:
    store = TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns()))
    commits: list[None] = []
    sa.event.listen(databases.log, "commit", lambda conn: commits.append(None))
    read = ApiCall(USERS_URL, 0, 200, duration_ms=3)

    for _ in range(3):
        store.record_call("Users", read, deferred=True)
    assert (logged_statuses(databases), len(commits)) == ([], 0), "three pages read: nothing written yet"

    store.record_call("Users", ApiCall(USERS_URL, 0, 503, 4, "HTTP 503: busy"))
    assert sorted(logged_statuses(databases)) == ["Failure"] + ["Success"] * 3 and len(commits) == 1

    store.record_call("Users", read, deferred=True)
    store.record_call("Users", ApiCall("orders", 3000, None, 40))  # the batch those pages went into, written
    store.record_call("Users", read, deferred=True)
    store.flush_calls()  # the entity's end
    store.flush_calls()
    assert len(logged_statuses(databases)) == 7 and len(commits) == 3


def test_reads_never_wait_more_than_a_hundred_to_be_logged(databases: SyncDatabases, settings: Settings) -> None:
    store = TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns()))

    for _ in range(99):
        store.record_call("Users", ApiCall(USERS_URL, 0, 200, 3), deferred=True)
    assert logged_statuses(databases) == []
    store.record_call("Users", ApiCall(USERS_URL, 0, 200, 3), deferred=True)

    assert logged_statuses(databases) == ["Success"] * 100


def test_rows_are_listed_newest_first_with_failure_details_from_additional_information(
    databases: SyncDatabases, settings: Settings
) -> None:
    write_call(databases, settings, "Users", minutes_ago(30))
    write_call(databases, settings, "Users", minutes_ago(20), status=503, error="HTTP 503: busy")
    write_call(databases, settings, "ActualOrg", minutes_ago(10), status=None, error="no response: ReadTimeout")

    rows = log_rows(databases.log, LogQuery())

    assert [(row.entity, row.status, row.created_on_utc) for row in rows] == [
        ("ActualOrg", "Failure", minutes_ago(10)),
        ("Users", "Failure", minutes_ago(20)),
        ("Users", "Success", minutes_ago(30)),
    ]
    assert (rows[1].http_response_code, rows[1].exception_message, rows[1].batch_size) == (503, "HTTP 503: busy", 3)
    assert (rows[2].http_response_code, rows[2].exception_message, rows[2].duration_ms) == (200, None, 12)
    assert rows[0].http_response_code is None and rows[0].endpoint_url == USERS_URL


def test_entity_status_and_time_range_select_only_matching_rows(databases: SyncDatabases, settings: Settings) -> None:
    for minutes in (90, 60, 30, 0):
        write_call(databases, settings, "Users", minutes_ago(minutes), status=500, error=f"failed {minutes}")
        write_call(databases, settings, "OrgObject", minutes_ago(minutes), status=500, error=f"failed {minutes}")
    write_call(databases, settings, "Users", minutes_ago(45))

    query = LogQuery(entities=["Users"], statuses=["Failure"], since=minutes_ago(60), until=minutes_ago(0))
    rows = log_rows(databases.log, query)

    assert [row.exception_message for row in rows] == ["failed 30", "failed 60"]
    assert {row.entity for row in rows} == {"Users"}


def test_an_aware_since_is_compared_in_utc(databases: SyncDatabases, settings: Settings) -> None:
    write_call(databases, settings, "Users", minutes_ago(90))
    write_call(databases, settings, "Users", minutes_ago(30))
    jakarta = dt.timezone(dt.timedelta(hours=7))
    since = (NOW - dt.timedelta(hours=1)).replace(tzinfo=dt.UTC).astimezone(jakarta)

    rows = log_rows(databases.log, LogQuery(since=since))

    assert [row.created_on_utc for row in rows] == [minutes_ago(30)]


def test_other_applications_rows_in_the_shared_scheduler_log_are_left_out(
    databases: SyncDatabases, settings: Settings
) -> None:
    write_foreign_row(databases, settings, minutes_ago(5))
    write_call(databases, settings, "EventsCalendar", minutes_ago(6))

    assert [row.entity for row in log_rows(databases.log, LogQuery())] == ["EventsCalendar"]
    assert call_counts(databases.log)["Users"].calls == 0


def test_limit_keeps_the_newest_rows(databases: SyncDatabases, settings: Settings) -> None:
    for minutes in range(10):
        write_call(databases, settings, "Users", minutes_ago(minutes))

    rows = log_rows(databases.log, LogQuery(limit=3))

    assert [row.created_on_utc for row in rows] == [minutes_ago(0), minutes_ago(1), minutes_ago(2)]


def test_call_counts_of_a_window(databases: SyncDatabases, settings: Settings) -> None:
    write_call(databases, settings, "Users", minutes_ago(120), status=500, error="too old to count")
    write_call(databases, settings, "Users", minutes_ago(50), status=500, error="first in window")
    write_call(databases, settings, "Users", minutes_ago(40))
    write_call(databases, settings, "Users", minutes_ago(20))
    write_call(databases, settings, "ActualOrg", minutes_ago(10), status=422, error="later")

    counts = call_counts(databases.log, since=minutes_ago(60))

    assert (counts["Users"].calls, counts["Users"].failed, counts["Users"].last_success_utc) == (3, 1, minutes_ago(20))
    assert (counts["ActualOrg"].calls, counts["ActualOrg"].failed) == (1, 1)
    assert counts["OrgObject"].calls == 0 and counts["OrgObject"].success_rate is None


def test_entity_summary_gives_the_call_success_rate_last_success_and_refused_records_not_yet_delivered(
    databases: SyncDatabases, settings: Settings
) -> None:
    for minutes in (50, 40, 30):
        write_call(databases, settings, "Users", minutes_ago(minutes))
    write_call(databases, settings, "Users", minutes_ago(10), status=422, error="HTTP 422: invalid")
    users = [entity_id_of("Users", number) for number in range(3)]
    reject(databases, "Users", users)
    reject(databases, "Users", users[:1])  # refused again on a later run: still one record
    reject(databases, "ActualOrg", [entity_id_of("ActualOrg", 0)])
    databases.track("Users", users[2:])  # delivered since it was refused

    summary = entity_summary(databases.log, "Users")

    assert summary == {
        "calls": 4,
        "failed_calls": 1,
        "call_success_rate": 0.75,
        "last_success_utc": minutes_ago(30).isoformat(),
        "rejected_records": 2,
    }


def test_entity_summary_of_an_entity_never_synced(databases: SyncDatabases) -> None:
    assert entity_summary(databases.log, "OrgObject") == {
        "calls": 0,
        "failed_calls": 0,
        "call_success_rate": None,
        "last_success_utc": None,
        "rejected_records": 0,
    }


def pending_inputs(
    databases: SyncDatabases, settings: Settings, entity: str
) -> tuple[EntitySyncPlan, sa.Engine, TrackingStore]:
    """What `pending_count` reads for an entity: its plan, its source and the Log database."""
    tracking = TrackingStore(databases.log, SchedulerLogWriter(settings.scheduler_log.columns()))
    return entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME[entity], settings), databases.source_engine(entity), tracking


def test_pending_counts_the_source_records_not_tracked_yet(
    databases: SyncDatabases, settings: Settings, run_sync: EntitySync
) -> None:
    databases.insert_rows("ActualOrg", 7)
    databases.track("ActualOrg", [entity_id_of("ActualOrg", number) for number in (0, 4)])
    plan, source, tracking = pending_inputs(databases, settings, "ActualOrg")

    before = pending_count(plan, source, tracking)
    run_sync("ActualOrg")
    after = pending_count(plan, source, tracking)

    assert (before.rows_found, before.already_tracked, before.pending, before.error) == (7, 2, 5, None)
    assert (after.rows_found, after.already_tracked, after.pending) == (7, 7, 0)


def test_pending_names_a_source_that_cannot_be_read(databases: SyncDatabases, settings: Settings) -> None:
    with databases.source_engine("Users").begin() as conn:
        conn.execute(sa.text("DROP TABLE TB_M_USER"))

    count = pending_count(*pending_inputs(databases, settings, "Users"))

    assert count.pending is None
    assert count.error is not None and "cannot read TB_M_USER" in count.error


def test_queries_compile_for_sql_server_with_top_and_few_parameters() -> None:
    query = LogQuery(statuses=["Failure"], since=NOW, until=NOW, limit=50)

    for statement in (log_rows_query(query), call_counts_query(query), rejected_untracked_query("Users")):
        compiled = statement.compile(dialect=mssql.dialect())
        assert len(compiled.params) < 2100
    assert "TOP __[POSTCOMPILE_param_1]" in str(log_rows_query(query).compile(dialect=mssql.dialect()))


def test_render_formats_table_csv_and_json(databases: SyncDatabases, settings: Settings) -> None:
    write_call(databases, settings, "Users", minutes_ago(5), status=500, error="HTTP 500: " + "x" * 300)
    write_call(databases, settings, "Users", minutes_ago(6))
    frame = log_frame(log_rows(databases.log, LogQuery()))

    table = render(frame, "table")
    records = list(csv.DictReader(io.StringIO(render(frame, "csv"))))
    documents = json.loads(render(frame, "json"))

    assert "2024-06-01 02:55:00" in table and "x" * 300 not in table and "None" not in table
    assert [(r["status"], r["http_response_code"], len(r["exception_message"])) for r in records] == [
        ("Failure", "500", 310),
        ("Success", "200", 0),
    ]
    assert documents[0]["created_on_utc"] == "2024-06-01T02:55:00"
    assert documents[0]["http_response_code"] == 500 and documents[1]["exception_message"] is None
    assert render(pending_frame([]), "table") == "(no rows)\n"


def test_referenced_entities_default_to_all_in_spec_order() -> None:
    assert referenced_entities([]) == ["Users", "ActualOrg", "ActualEntity", "OrgObject", "EventsCalendar"]
    assert referenced_entities(["OrgObject", "Users"]) == ["OrgObject", "Users"]


@pytest.fixture
def cli_environment(databases: SyncDatabases, monkeypatch: pytest.MonkeyPatch) -> SyncDatabases:
    """The variables `sync-pipeline logs` reads, pointing at the test databases and the packaged settings."""
    for key, env_var in DATABASE_URL_ENV_VARS.items():
        monkeypatch.setenv(env_var, databases.urls[key])
    monkeypatch.delenv(SETTINGS_ENV_VAR, raising=False)
    return databases


def test_logs_command_lists_failures_of_an_entity_as_json(
    cli_environment: SyncDatabases, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    write_call(cli_environment, settings, "Users", dt.datetime(2024, 6, 1, 1, 0), status=500, error="HTTP 500: down")
    write_call(cli_environment, settings, "Users", dt.datetime(2024, 6, 1, 2, 0))
    write_call(cli_environment, settings, "ActualOrg", dt.datetime(2024, 6, 1, 2, 0), status=500, error="other")

    code = main(
        ["logs", "--entity", "Users", "--status", "Failure", "--since", "2024-06-01T07:30+07:00", "--format", "json"]
    )

    assert code == 0
    assert [(r["entity"], r["exception_message"]) for r in json.loads(capsys.readouterr().out)] == [
        ("Users", "HTTP 500: down")
    ]


def test_logs_command_counts_pending_records_per_entity(
    cli_environment: SyncDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_environment.insert_rows("EventsCalendar", 4)
    cli_environment.track("EventsCalendar", [entity_id_of("EventsCalendar", 0)])

    code = main(["logs", "--status", "Pending", "--entity", "EventsCalendar", "--format", "csv"])

    assert code == 0
    assert list(csv.DictReader(io.StringIO(capsys.readouterr().out))) == [
        {"entity": "EventsCalendar", "rows_found": "4", "already_tracked": "1", "pending": "3", "error": ""}
    ]


def test_logs_command_names_the_missing_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV_VARS["log_db"], raising=False)

    code = main(["logs"])

    assert code == 2
    assert "SYNC_LOG_DB_URL is not set" in capsys.readouterr().err


def test_logs_command_refuses_a_time_range_for_pending(
    cli_environment: SyncDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["logs", "--status", "Pending", "--since", "2024-06-01T00:00"])

    assert code == 2
    assert "--since/--until do not apply to Pending" in capsys.readouterr().err


def test_logs_command_rejects_a_timestamp_that_is_not_iso(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["logs", "--since", "yesterday"])

    assert exit_info.value.code == 2
    assert "not an ISO 8601 timestamp: 'yesterday'" in capsys.readouterr().err


def test_a_run_dead_lettered_twice_is_listed_once_with_its_attempts_added_and_gone_once_it_succeeds(
    cli_environment: SyncDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = DeadLetters(cli_environment.log)
    letters.record("zuora.Workflows/acme", "customer acme: token endpoint down", 4, "run-1")
    letters.record("zuora.Workflows/acme", "customer acme: HTTP 503", 4, "run-2")
    letters.record("zuora.Workflows/beta", "customer beta: client_id: is missing", 1, "run-3")

    assert main(["logs", "--dead-letters", "--format", "json"]) == 0
    listed = {row["entity_type"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(listed) == {"zuora.Workflows/acme", "zuora.Workflows/beta"}
    acme = listed["zuora.Workflows/acme"]
    assert (acme["attempts"], acme["reason"], acme["run_id"]) == (8, "customer acme: HTTP 503", "run-2")
    assert acme["first_failed_on"] <= acme["last_failed_on"]

    assert letters.clear("zuora.Workflows/acme") and not letters.clear("zuora.Workflows/acme")
    assert [letter.entity_type for letter in letters.listed()] == ["zuora.Workflows/beta"]


def test_conflicts_and_history_are_listed_for_review_newest_first(
    cli_environment: SyncDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    history = ChangeHistory(cli_environment.log, "zuora.Workflows/acme", "run-7")
    history.flag(
        [
            ConflictingRow(
                "1001", "updated_at older than the stored row's, content differs", {"name": "a"}, {"name": "b"}
            )
        ]
    )
    history.record([ChangedRow("1002", "updated", {"name": "old"}, {"name": "new"})], applied=True)

    assert main(["logs", "--conflicts", "--format", "json"]) == 0
    (conflict,) = json.loads(capsys.readouterr().out)
    assert (conflict["EntityType"], conflict["RecordKey"], conflict["Seen"]) == ("zuora.Workflows/acme", "1001", 1)
    assert json.loads(conflict["IncomingValues"]) == {"name": "b"}
    assert main(["logs", "--history", "--format", "json"]) == 0
    (change,) = json.loads(capsys.readouterr().out)
    assert (change["RecordKey"], change["Change"], change["RunId"]) == ("1002", "updated", "run-7")
    assert json.loads(change["OldValues"]) == {"name": "old"} and change["AppliedOn"] is not None
    with pytest.raises(SystemExit):  # one listing at a time
        main(["logs", "--conflicts", "--history"])
