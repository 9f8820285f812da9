"""A run's snapshot of tracked IDs: canonical GUIDs found exactly, any other key by a fingerprint the
table confirms, and the tracking table read once per run instead of once per page."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import mssql

from sync_pipeline.engine.state.tracked_ids import TrackedIds
from sync_pipeline.engine.state.tracking_sql import tracked_ids_query

from .conftest import EntitySync, SettingsFactory, SyncDatabases
from .fakes import RecordingApiClient
from .test_entity_sync import users_ids


def table_holding(tracked: set[str], asked: list[list[str]]) -> Callable[[Sequence[str]], set[str]]:
    """The tracking table's answer to "which of these are tracked", keeping each question asked."""

    def confirm(entity_ids: Sequence[str]) -> set[str]:
        asked.append(list(entity_ids))
        return set(entity_ids) & tracked

    return confirm


def guids(numbers: range) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"users/{n}")) for n in numbers]


def test_every_other_canonical_guid_of_a_page_is_found_exactly_without_asking_the_table() -> None:
    page = guids(range(6000))
    tracked = page[::2]
    asked: list[list[str]] = []

    snapshot = TrackedIds([tracked[:2500], tracked[2500:]], table_holding(set(tracked), asked))

    assert len(snapshot) == 3000
    assert snapshot.among(page) == set(tracked)
    assert snapshot.among(page[1::2]) == set()
    assert asked == []


def test_text_keys_are_fingerprints_and_only_their_hits_are_asked_of_the_table() -> None:
    page = [f"ORG-{n}" for n in range(100)]
    tracked = page[::2]
    asked: list[list[str]] = []

    snapshot = TrackedIds([tracked], table_holding(set(tracked), asked))

    assert snapshot.among(page) == set(tracked)
    assert asked == [tracked]


def test_a_fingerprint_hit_the_table_does_not_confirm_is_sent() -> None:
    """Two texts can share a 64-bit fingerprint: the table's answer decides, never the fingerprint alone."""
    tracked = ["ORG-1", "ORG-2"]
    asked: list[list[str]] = []
    snapshot = TrackedIds([tracked], table_holding({"ORG-2"}, asked))

    assert snapshot.among(["ORG-1", "ORG-2", "ORG-3"]) == {"ORG-2"}
    assert asked == [["ORG-1", "ORG-2"]]


def test_ids_that_only_look_like_guids_are_compared_as_text() -> None:
    guid = guids(range(1))[0]
    look_alikes = [guid.upper(), "x" * 36, "é" * 36, guid.replace("-", "+"), guid[:35] + "g", "{" + guid[1:]]
    asked: list[list[str]] = []
    snapshot = TrackedIds([[guid, *look_alikes[:3]]], table_holding({guid, *look_alikes[:3]}, asked))

    found = snapshot.among([*look_alikes, guid, "12"])

    assert found == {guid, *look_alikes[:3]}
    assert all(guid not in question for question in asked)


def test_nothing_tracked_answers_every_page_with_nothing_and_never_asks() -> None:
    asked: list[list[str]] = []
    snapshot = TrackedIds([], table_holding(set(), asked))

    assert len(snapshot) == 0
    assert snapshot.among(guids(range(10))) == set()
    assert asked == []


def test_a_half_tracked_entity_reads_its_tracking_once_not_once_per_page(
    databases: SyncDatabases, run_sync: EntitySync, api: RecordingApiClient, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=100)
    databases.insert_rows("Users", 1000)
    tracked = users_ids(1000)[::2]
    databases.track("Users", tracked)
    statements: list[str] = []

    def remember(conn: sa.Connection, cursor: object, statement: str, *rest: object) -> None:
        statements.append(statement)

    sa.event.listen(databases.log, "before_cursor_execute", remember)
    report = run_sync("Users", settings=settings)
    sa.event.remove(databases.log, "before_cursor_execute", remember)

    tracking_reads = [s for s in statements if s.lstrip().startswith("SELECT") and "TB_R_SYNC_TRACKING" in s]
    id_reads = [s for s in tracking_reads if "EntityId" in s.partition("FROM")[0]]
    assert len(id_reads) == 1
    assert tracking_reads == id_reads, "the progress total and the tracked count come from that one read"
    assert sorted(api.accepted_ids(settings.endpoint_url("Users"))) == sorted(set(users_ids(1000)) - set(tracked))
    assert (report.rows_found, report.already_tracked, report.sent) == (1000, 500, 500)


def test_the_tracked_ids_are_read_by_one_statement_of_at_most_two_parameters_on_sql_server() -> None:
    every = tracked_ids_query("Users", None).compile(dialect=mssql.dialect(paramstyle="qmark"))
    before = tracked_ids_query("Users", dt.datetime(2024, 6, 1)).compile(dialect=mssql.dialect(paramstyle="qmark"))

    assert str(every).endswith("WHERE [TB_R_SYNC_TRACKING].[EntityType] = ?")
    assert str(before).endswith(
        "WHERE [TB_R_SYNC_TRACKING].[EntityType] = ? AND [TB_R_SYNC_TRACKING].[SyncTimestamp] < ?"
    )
    assert (len(every.params), len(before.params)) == (1, 2)
