"""`sync-pipeline`: the demo, the local receiver, and the Log tables' DDL."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from sync_pipeline.tables import log_metadata

DIALECTS = ("mssql", "postgresql", "mysql", "sqlite")


def log_tables_ddl(dialect_name: str) -> str:
    """CREATE TABLE/INDEX statements for the Log database's tables, from the metadata."""
    dialect = sa.create_mock_engine(f"{dialect_name}://", executor=lambda *a, **k: None).dialect
    statements: list[str] = []
    for table in log_metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        statements.extend(str(CreateIndex(index).compile(dialect=dialect)).strip() for index in table.indexes)
    return "".join(f"{statement};\n\n" for statement in statements)


def _demo(args: argparse.Namespace) -> int:
    from sync_pipeline.demo.run import run_demo

    return run_demo(Path(args.workdir), args.port)


def _ui(args: argparse.Namespace) -> int:
    from sync_pipeline.demo.run import DemoPaths, environment, prepare, running_receiver

    paths = DemoPaths(Path(args.workdir))
    prepare(paths, args.port)
    env = {**os.environ, **environment(paths)}
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    with running_receiver(args.port):
        command = ["dagster", "dev", "-m", "sync_pipeline.definitions", "-h", "127.0.0.1", "-p", str(args.ui_port)]
        return subprocess.call([str(Path(sys.executable).with_name(command[0])), *command[1:]], env=env)


def _env(args: argparse.Namespace) -> int:
    from sync_pipeline.demo.run import DemoPaths, environment, prepare

    paths = DemoPaths(Path(args.workdir))
    prepare(paths, args.port)
    sys.stdout.write("".join(f"export {name}={shlex.quote(value)}\n" for name, value in environment(paths).items()))
    return 0


def _ddl(args: argparse.Namespace) -> int:
    sys.stdout.write(log_tables_ddl(args.dialect))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sync-pipeline` command."""
    parser = argparse.ArgumentParser(prog="sync-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, help_text in (
        ("demo", _demo, "seed SQLite, start the local receiver, run the job and print a per-entity summary"),
        ("ui", _ui, "start the local receiver and the Dagster UI on the demo databases"),
        ("env", _env, "print `export` lines that point dg/dagster commands at the demo databases"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--workdir", default=".demo", help="where the demo keeps its files (default .demo)")
        command.add_argument("--port", type=int, default=8765, help="the receiver's port on 127.0.0.1")
        command.set_defaults(handler=handler)
    commands.choices["ui"].add_argument("--ui-port", type=int, default=3000, help="the Dagster UI's port")
    ddl = commands.add_parser("ddl", help="print the Log tables' DDL for a dialect")
    ddl.add_argument("dialect", choices=DIALECTS)
    ddl.set_defaults(handler=_ddl)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
