"""The README's run command: the embedded demo syncs everything once, and a second run sends nothing."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from sync_pipeline.connectors.zuora.workflows import workflows_table
from sync_pipeline.demo.field_service_demo import DEMO_DATA
from sync_pipeline.demo.run import DEMO_ROWS, DemoPaths, environment, prepare, run_demo, tracking_count
from sync_pipeline.demo.zuora_demo import DEMO_TENANTS
from sync_pipeline.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_demo_sends_every_seeded_record_once_and_a_second_run_sends_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in environment(DemoPaths(tmp_path)):  # run_demo sets these; restore them afterwards
        monkeypatch.setenv(name, "set-by-the-demo")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    workdir = tmp_path / "demo"

    first = run_demo(workdir, free_port())
    first_printed = capsys.readouterr()
    first_output = first_printed.out
    second = run_demo(workdir, free_port())
    second_output = capsys.readouterr().out

    assert (first, second) == (0, 0)
    assert tracking_count(DemoPaths(workdir)) == sum(DEMO_ROWS.values())
    assert f"sent {sum(DEMO_ROWS.values())} records in total" in first_output
    assert "sent 0 records in total" in second_output
    printed = first_printed.out + first_printed.err
    assert " - DEBUG - " not in printed and " - INFO - " not in printed, "the summary, not the run's event log"
    assert " - ERROR - " not in printed, "the refused customer is in the summary, not a traceback"
    assert f"wrote {sum(DEMO_TENANTS.values())} workflow rows in total" in first_output
    assert "wrote 0 workflow rows in total" in second_output
    assert re.search(r"^umbrella .* no token from http://127\.0\.0\.1:\d+/oauth/token", first_output, flags=re.M)
    chr_records = DEMO_DATA.accounts * (1 + DEMO_DATA.contacts + DEMO_DATA.work_orders)
    assert f"sent {chr_records} records to Praxedo in total" in first_output
    assert re.search(r"^contacts\s+81\s+80\s+0\s+0\s+0\s+1\b", first_output, flags=re.M)  # CON-LATE-1 held back
    assert "sent 0 records to Praxedo in total" in second_output


def test_editing_one_workflow_of_the_demos_zuora_and_one_chr_account_updates_exactly_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in environment(DemoPaths(tmp_path)):
        monkeypatch.setenv(name, "set-by-the-demo")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    workdir = tmp_path / "demo"
    assert run_demo(workdir, free_port()) == 0
    kept = workdir / "zuora" / "acme.json"
    workflows = json.loads(kept.read_text())
    workflows[4] = {**workflows[4], "name": "Edited in the demo", "updatedAt": "2027-01-01T00:00:00.000Z"}
    kept.write_text(json.dumps(workflows))
    chr_db = sa.create_engine(DemoPaths(workdir).field_service.chr_db_url)
    with chr_db.begin() as conn:
        conn.execute(sa.text("UPDATE CHR_ACCOUNT SET Phone = '+33 4 72 99 99 99' WHERE AccountId = 'ACC-00003'"))
    chr_db.dispose()
    capsys.readouterr()

    assert run_demo(workdir, free_port()) == 0

    output = capsys.readouterr().out
    assert "wrote 1 workflow row in total" in output
    assert re.search(r"^acme\s+120\s+0\s+1\s+119\b", output, flags=re.M)  # workflows, inserted, updated, unchanged
    assert "sent 1 record to Praxedo in total" in output
    assert re.search(r"^accounts\s+40\s+0\s+1\s+0\s+39\b", output, flags=re.M)  # records, created, updated, …
    held = json.loads((workdir / "praxedo.json").read_text())["CustomerManager"]
    assert [a["phone"] for a in held if a["id"] == "ACC-00003"] == ["+33 4 72 99 99 99"]
    app = sa.create_engine(DemoPaths(workdir).zuora.app_db_url)
    with app.connect() as conn:
        edited = (workflows_table.c.customer_id == "acme") & (workflows_table.c.zuora_id == workflows[4]["id"])
        names = conn.execute(sa.select(workflows_table.c.name).where(edited))
        assert names.scalars().all() == ["Edited in the demo"]
    app.dispose()


def test_alert_links_of_the_demo_follow_the_ui_port(tmp_path: Path) -> None:
    paths = DemoPaths(tmp_path / "demo")

    prepare(paths, port=free_port(), ui_port=3100)

    assert load_settings(paths.settings_file).alerts.ui_base_url == "http://127.0.0.1:3100"
    zuora = yaml.safe_load(paths.zuora.settings_file.read_text())
    assert zuora["alerts"]["ui_base_url"] == "http://127.0.0.1:3100"  # the Zuora pull's alerts too
    field_service = yaml.safe_load(paths.field_service.settings_file.read_text())
    assert field_service["alerts"]["ui_base_url"] == "http://127.0.0.1:3100"  # and the field-service syncs'


@pytest.mark.parametrize(
    ("target", "variables", "expected"),
    [
        ("demo", ["PORT=8800"], "sync-pipeline demo --port 8800"),
        ("ui", ["PORT=8800", "UI_PORT=3100"], "sync-pipeline ui --port 8800 --ui-port 3100"),
    ],
)
def test_make_passes_the_ports_it_is_given(target: str, variables: list[str], expected: str) -> None:
    planned = subprocess.run(
        ["make", "--dry-run", "--always-make", target, *variables],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert expected in planned
