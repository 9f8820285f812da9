"""The packaged Zuora pull (defs/zuora) against the local Zuora: exports, history, conflicts and a customer's
run that commits all or nothing, on SQLite, PostgreSQL and MariaDB.

Each test runs the real job for one customer partition on an ephemeral instance; the application's and the
Log database are two new databases of one server (two files for SQLite).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_pipeline.connectors.zuora.workflows import workflows_table
from sync_pipeline.engine.tables import conflict_table, history_table
from sync_pipeline_tests.real_db.conftest import SERVERS, fresh_databases, materialized, table_rows
from sync_pipeline_tests.zuora_pulls import Pull, zuora_pull


@pytest.fixture(params=["sqlite", *sorted(SERVERS)])
def pull(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pull]:
    if request.param == "sqlite":
        with zuora_pull({name: f"sqlite:///{tmp_path / name}.db" for name in ("app", "log")}, monkeypatch) as started:
            yield started
        return
    with (
        fresh_databases(request.param, ("app_db", "log_db")) as urls,
        zuora_pull({"app": urls["app_db"], "log": urls["log_db"]}, monkeypatch) as started,
    ):
        yield started


def test_each_new_workflow_is_stored_with_its_export_and_a_second_run_calls_no_export(pull: Pull) -> None:
    first = pull.run()

    assert first.success
    figures = materialized(first)
    assert (figures["inserted"], figures["exports_ok"], figures["exports_failed"]) == (60, 60, 0)
    rows = pull.rows()
    some = rows[min(rows)]
    assert some["export_status"] == "ok" and some["export_error"] is None
    assert set(json.loads(some["export_json"])) == {"linkages", "tasks", "workflow"}
    assert json.loads(some["export_json"])["workflow"]["id"] == some["zuora_id"]

    exports_before = pull.exports_called()
    second = pull.run()
    assert materialized(second)["inserted"] == 0 and materialized(second)["unchanged"] == 60
    assert pull.exports_called() == exports_before  # nothing changed: no export fetched again
    assert table_rows(pull.log, history_table) == []  # and nothing changed in the table


def test_an_export_that_fails_leaves_its_workflow_saved_marked_failed_and_is_fetched_again_next_run(
    pull: Pull,
) -> None:
    broken, gone = pull.zuora.workflow_ids(pull.acme)[3:5]
    pull.zuora.fail_exports(pull.acme, [broken], status=500)
    pull.zuora.fail_exports(pull.acme, [gone], status=404)

    first = pull.run()

    assert first.success  # a failed export marks its row; the run goes on
    figures = materialized(first)
    assert (figures["inserted"], figures["exports_ok"], figures["exports_failed"]) == (60, 58, 2)
    rows = pull.rows()
    assert rows[broken]["export_status"] == "failed" and rows[broken]["export_json"] is None
    assert "HTTP 500 after 2 attempts" in rows[broken]["export_error"]  # 5xx: retried, then marked
    assert "HTTP 404 after 1 attempt" in rows[gone]["export_error"]  # 404: not retried
    assert rows[broken]["name"] == "acme workflow 4"

    pull.zuora.restore_exports(pull.acme, [broken, gone])  # both answer again
    exports_before = pull.exports_called()
    second = pull.run()

    assert materialized(second)["exports_ok"] == 2 and materialized(second)["updated"] == 0
    assert pull.exports_called() - exports_before == 2  # only the two that had failed
    rows = pull.rows()
    assert [rows[n]["export_status"] for n in (broken, gone)] == ["ok", "ok"]
    assert json.loads(rows[broken]["export_json"])["workflow"]["id"] == broken


def test_a_changed_workflow_updates_one_row_and_leaves_its_old_and_new_values_in_the_history(pull: Pull) -> None:
    assert pull.run().success
    changed = pull.zuora.workflow_ids(pull.acme)[7]
    before = pull.rows()[changed]
    pull.zuora.put_workflow(pull.acme, changed, name="Renamed in Zuora")

    again = pull.run()

    figures = materialized(again)
    assert (figures["updated"], figures["unchanged"], figures["exports_ok"]) == (1, 59, 1)
    (change,) = table_rows(pull.log, history_table)
    assert (change["EntityType"], change["RecordKey"], change["Change"]) == (
        "zuora.Workflows/acme",
        str(changed),
        "updated",
    )
    old, new = json.loads(change["OldValues"]), json.loads(change["NewValues"])
    assert (old["name"], new["name"]) == (before["name"], "Renamed in Zuora")
    assert old["updated_at"] < new["updated_at"]
    assert (
        old["export_json"].startswith("sha256:") and old["export_json"] != new["export_json"]
    )  # the export changed too
    assert change["RunId"] == again.run_id and change["AppliedOn"] is not None

    pull.zuora.delete_workflow(pull.acme, changed)
    assert materialized(pull.run())["deleted"] == 1
    deleted = [row for row in table_rows(pull.log, history_table) if row["Change"] == "deleted"]
    assert [(row["RecordKey"], json.loads(row["OldValues"])) for row in deleted] == [
        (str(changed), {"deleted_at": None})
    ]


def test_a_record_as_old_as_its_stored_row_but_different_is_flagged_for_review_not_applied(pull: Pull) -> None:
    assert pull.run().success
    edited = pull.zuora.workflow_ids(pull.acme)[2]
    with pull.app.begin() as conn:  # the stored row changed behind the sync (by hand, or another writer)
        conn.execute(
            sa.update(workflows_table).where(workflows_table.c.zuora_id == edited).values(name="Edited by hand")
        )

    again = pull.run()

    assert materialized(again)["conflicts"] == 1 and materialized(again)["updated"] == 0
    assert pull.rows()[edited]["name"] == "Edited by hand"  # not overwritten silently
    (flag,) = table_rows(pull.log, conflict_table)
    assert flag["RecordKey"] == str(edited) and "updated_at equal to the stored row's" in flag["Reason"]
    assert json.loads(flag["StoredValues"])["name"] == "Edited by hand"
    assert json.loads(flag["IncomingValues"])["name"] == "acme workflow 3"
    pull.run()
    (flag,) = table_rows(pull.log, conflict_table)
    assert flag["Seen"] == 2  # one row per record, seen again


def test_a_customer_run_that_fails_midway_leaves_its_rows_as_they_were_and_a_rerun_picks_up(pull: Pull) -> None:
    assert pull.run().success
    renamed = pull.zuora.workflow_ids(pull.acme)[10]
    pull.zuora.put_workflow(pull.acme, renamed, name="Renamed before the failure")
    for number in range(61, 121):  # a second page's worth of new workflows
        pull.zuora.put_workflow(pull.acme, None, name=f"acme workflow {number}")
    pull.zuora.fail_list_pages(pull.acme, [3], status=503)  # page 3 down for longer than the retries

    failed = pull.run()

    assert not failed.success
    outcome = str(materialized(failed)["outcome"])
    assert "rolled back" in outcome and "HTTP 503" in outcome
    rows = pull.rows()
    assert len(rows) == 60 and rows[renamed]["name"] == "acme workflow 11"  # pages 1 and 2 were undone too
    assert table_rows(pull.log, history_table) == []  # its change never happened

    pull.zuora.fail_list_pages(pull.acme, [], status=503)
    rerun = pull.run()

    assert rerun.success
    assert (materialized(rerun)["inserted"], materialized(rerun)["updated"]) == (60, 1)
    assert len(pull.rows()) == 120 and pull.rows()[renamed]["name"] == "Renamed before the failure"
    (change,) = table_rows(pull.log, history_table)
    assert change["RunId"] == rerun.run_id and change["AppliedOn"] is not None
