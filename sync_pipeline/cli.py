"""`sync-pipeline`: the demo, the local receiver, the Log tables' DDL, the sync log viewer, re-queueing a customer's
run and resending dead-lettered records."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from sync_pipeline.engine.tables import log_metadata

if TYPE_CHECKING:  # pandas is imported only by the commands that render tables
    import pandas as pd

DIALECTS = ("mssql", "postgresql", "mysql", "sqlite")


def log_tables_ddl(dialect_name: str) -> str:
    """CREATE TABLE/INDEX statements for the Log database's tables, from the metadata."""
    dialect = sa.create_mock_engine(f"{dialect_name}://", executor=lambda *a, **k: None).dialect
    statements: list[str] = []
    for table in log_metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)).strip())
        indexes = sorted(table.indexes, key=lambda index: str(index.name))  # a set: sorted, so the files stay put
        statements.extend(str(CreateIndex(index).compile(dialect=dialect)).strip() for index in indexes)
    return "".join(f"{statement};\n\n" for statement in statements)


def _demo(args: argparse.Namespace) -> int:
    from sync_pipeline.demo.run import run_demo

    return run_demo(Path(args.workdir), args.port)


def _ui(args: argparse.Namespace) -> int:
    """`dg dev` on workspace.yaml (so the code location is called `sync_pipeline`, as in production),
    started from DAGSTER_HOME so the instance's own dagster.yaml is the one in force."""
    from sync_pipeline.demo.field_service_demo import running_praxedo
    from sync_pipeline.demo.run import DemoPaths, environment, prepare, running_receiver
    from sync_pipeline.demo.zuora_demo import running_zuora

    workspace = Path(args.workspace).resolve()
    if not workspace.is_file():
        sys.stderr.write(f"sync-pipeline ui: {workspace} not found; run it from the repository root (make ui)\n")
        return 2
    paths = DemoPaths(Path(args.workdir).resolve())
    prepare(paths, args.port, ui_port=args.ui_port)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        **environment(paths),
        "VIRTUAL_ENV": str(bin_dir.parent),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    command = [str(bin_dir / "dg"), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(args.ui_port)]
    with (
        running_receiver(args.port),
        running_zuora(paths.zuora, args.port),
        running_praxedo(paths.field_service, args.port),
    ):
        print(
            f"Dagster UI: http://127.0.0.1:{args.ui_port} (Ctrl-C stops it, the demo receiver, Zuora and Praxedo)",
            flush=True,
        )
        process = subprocess.Popen(command, env=env, cwd=home)
        try:
            return process.wait()
        except KeyboardInterrupt:
            # The terminal sent SIGINT to dg dev as well; give it the time it takes to stop its
            # webserver and daemon, so no process is left behind.
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            return 130


def _env(args: argparse.Namespace) -> int:
    from sync_pipeline.demo.run import DemoPaths, environment, prepare

    paths = DemoPaths(Path(args.workdir))
    prepare(paths, args.port)
    sys.stdout.write("".join(f"export {name}={shlex.quote(value)}\n" for name, value in environment(paths).items()))
    return 0


def _ddl(args: argparse.Namespace) -> int:
    sys.stdout.write(log_tables_ddl(args.dialect))
    return 0


def _timestamp(value: str) -> dt.datetime:
    """An ISO 8601 timestamp (`LogQuery` reads one without an offset as UTC, and converts one with)."""
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {value!r} (e.g. 2024-01-31T08:00)") from None


def _status(value: str) -> str:
    """A --status of `logs`, in any case, as the listing names it."""
    from sync_pipeline.engine.audit.log_queries import STATUSES

    known = {status.lower(): status for status in STATUSES}
    if value.lower() not in known:
        raise argparse.ArgumentTypeError(f"{value!r} is not a status; one of {', '.join(STATUSES)} (any case)")
    return known[value.lower()]


def _logs(args: argparse.Namespace) -> int:
    from sync_pipeline.engine.audit.log_queries import PENDING, QUEUE_STATUSES, referenced_entities
    from sync_pipeline.engine.db_errors import describe_db_error
    from sync_pipeline.engine.state.change_history import listed_changes, listed_conflicts
    from sync_pipeline.engine.state.dead_letters import DeadLetters
    from sync_pipeline.engine.state.tracking import TrackingUnavailable
    from sync_pipeline.log_viewer import (
        LogViewerError,
        dead_letter_frame,
        environment_engines,
        records_frame,
        render,
    )
    from sync_pipeline.settings import SettingsError
    from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC

    tamhr = args.sync == TAMHR_SYNC.name
    entities = referenced_entities([name for name in args.entity or [] if name in ENTITIES_BY_NAME])
    pending = args.status == PENDING
    listings = {
        "dead_letters": lambda engine: dead_letter_frame(DeadLetters(engine).listed()),
        "conflicts": lambda engine: records_frame(listed_conflicts(engine, args.limit)),
        "history": lambda engine: records_frame(listed_changes(engine, args.limit)),
    }
    listing = next((listed for name, listed in listings.items() if getattr(args, name)), None)
    if listing is not None:
        try:
            with environment_engines(["log_db"]) as engines:
                frame = listing(engines["log_db"])
        except (LogViewerError, TrackingUnavailable) as exc:
            sys.stderr.write(f"sync-pipeline logs: {exc}\n")
            return 1
        sys.stdout.write(render(frame, args.format))
        return 0
    try:
        unknown = sorted(set(args.entity or []) - set(ENTITIES_BY_NAME))
        if args.status in (PENDING, *QUEUE_STATUSES) and (args.since or args.until):
            raise LogViewerError(f"--since/--until do not apply to {args.status}: it lists what is there now")
        if not tamhr:
            frame = _sync_log_frame(args)
        elif unknown:
            raise LogViewerError(f"--entity {unknown[0]} is not a TAMHR entity: {', '.join(ENTITIES_BY_NAME)}")
        else:
            frame = _tamhr_frame(args, entities, pending)
    except (LogViewerError, SettingsError) as exc:
        sys.stderr.write(f"sync-pipeline logs: {exc}\n")
        return 2
    except TrackingUnavailable as exc:
        sys.stderr.write(f"sync-pipeline logs: {exc}\n")
        return 1
    except sa.exc.SQLAlchemyError as exc:
        sys.stderr.write(f"sync-pipeline logs: cannot read the Log database: {describe_db_error(exc)}\n")
        return 1
    sys.stdout.write(render(frame, args.format))
    return 0


def _tamhr_frame(args: argparse.Namespace, entities: list[str], pending: bool) -> pd.DataFrame:
    """The TAMHR push's SchedulerLog rows, its retry queue, or its pending counts, as the listing shows them."""
    from sync_pipeline.engine.audit.log_queries import QUEUE_STATUSES, LogQuery, log_rows, pending_counts
    from sync_pipeline.log_viewer import environment_engines, log_frame, needed_databases, pending_frame
    from sync_pipeline.orchestration.sync_assets import entity_plan
    from sync_pipeline.settings import load_settings
    from sync_pipeline.specs.tamhr import ENTITIES_BY_NAME, TAMHR_SYNC

    with environment_engines(needed_databases(entities, pending)) as engines:
        if args.status in QUEUE_STATUSES:
            return _queue_frame(engines["log_db"], entities, args.status, args.limit)
        if pending:
            settings = load_settings()
            plans = [entity_plan(TAMHR_SYNC, ENTITIES_BY_NAME[name], settings) for name in entities]
            return pending_frame(pending_counts(plans, engines, settings.scheduler_log.columns()))
        query = LogQuery(entities, [args.status] if args.status else [], args.since, args.until, args.limit)
        return log_frame(log_rows(engines["log_db"], query))


def _sync_log_frame(args: argparse.Namespace) -> pd.DataFrame:
    """`--sync NAME` for a sync other than TAMHR, by its declared entity names: its SchedulerLog rows, its retry
    queue (Queued, Dead), or its records not yet delivered nor queued (Pending: read from its source tables)."""
    from sync_pipeline.engine.audit.log_queries import PENDING, QUEUE_STATUSES, LogQuery, log_rows, pending_records
    from sync_pipeline.log_viewer import LogViewerError, environment_engines, log_frame, records_frame
    from sync_pipeline.orchestration.component import declared_sync
    from sync_pipeline.orchestration.sync_assets import entity_plan
    from sync_pipeline.settings import LOG_DB

    sync, settings = declared_sync(args.sync, Path(args.defs))
    names = [spec.name for spec in sync.entities]
    unknown = sorted(set(args.entity or []) - set(names))
    if unknown:
        raise LogViewerError(f"--entity {unknown[0]} is not an entity of {sync.name}: {', '.join(names)}")
    specs = [sync.entity(name) for name in args.entity or names]
    chosen = [sync.entity_type(spec) for spec in specs]
    if args.status == PENDING:
        sources = sorted({spec.source_db for spec in specs if spec.source_db})
        with environment_engines([LOG_DB, *sources], env_vars=settings.databases) as engines:
            listed = [
                record
                for spec in specs
                if spec.record_sink is not None
                for record in pending_records(
                    entity_plan(sync, spec, settings),
                    engines[spec.source_db or LOG_DB],
                    engines[LOG_DB],
                    args.limit,
                )
            ]
        return records_frame([asdict(record) for record in listed[: args.limit]])
    with environment_engines([LOG_DB], env_vars={LOG_DB: settings.databases[LOG_DB]}) as engines:
        if args.status in QUEUE_STATUSES:
            return _queue_frame(engines[LOG_DB], chosen, args.status, args.limit)
        query = LogQuery(chosen, [args.status] if args.status else [], args.since, args.until, args.limit)
        return log_frame(log_rows(engines[LOG_DB], query))


def _queue_frame(log_engine: sa.Engine, entity_types: list[str], status: str, limit: int) -> pd.DataFrame:
    """The records of these entities in the retry queue (Queued) or dead-lettered (Dead), with their errors."""
    from sync_pipeline.engine.audit.log_queries import DEAD
    from sync_pipeline.engine.state.retry_queue import QueuedRecord, queued_records
    from sync_pipeline.log_viewer import records_frame

    listed = queued_records(log_engine, entity_types, status == DEAD, limit)
    columns = [name for name in QueuedRecord.__dataclass_fields__ if status == DEAD or name != "dead_lettered_on"]
    return records_frame([{name: getattr(record, name) for name in columns} for record in listed]).reindex(
        columns=columns
    )


def _add_logs_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sync_pipeline.engine.audit.log_queries import DEFAULT_LIMIT, STATUSES
    from sync_pipeline.log_viewer import FORMATS
    from sync_pipeline.orchestration.component import DEFS_FOLDER
    from sync_pipeline.specs.tamhr import TAMHR_SYNC

    logs = commands.add_parser(
        "logs",
        help="list a sync's SchedulerLog rows (newest first), or count records still pending per entity",
        description="Databases come from SYNC_LOG_DB_URL (and SYNC_DEFAULT_DB_URL / SYNC_ESS_DB_URL for Pending), "
        "settings from SYNC_PIPELINE_SETTINGS; another sync's (--sync) from the variables its settings name. "
        "Timestamps are UTC.",
    )
    logs.add_argument(
        "--sync",
        default=TAMHR_SYNC.name,
        help=f"the sync whose rows are listed, e.g. field_service (default {TAMHR_SYNC.name})",
    )
    logs.add_argument(
        "--defs", default=str(DEFS_FOLDER), help="the defs folder --sync is found in (default: the package's)"
    )
    logs.add_argument(
        "--entity", action="append", help="an entity of the sync (Users, Accounts, ...); repeatable; default all"
    )
    logs.add_argument(
        "--status",
        type=_status,
        metavar="|".join(STATUSES),
        help="Success or Failure: SchedulerLog rows; Queued: records in the retry queue (refused or failed, tried "
        "again next run) with their attempts and first and last error; Dead: records dead-lettered after "
        "retries.max_record_attempts failed runs (`sync-pipeline resend` re-queues them); Pending: for TAMHR, "
        "untracked records per entity; for a create/update sync, each record of its source tables neither "
        "delivered as it is now nor queued (new, changed, held back), read now. Any case.",
    )
    logs.add_argument("--since", type=_timestamp, help="ISO 8601, inclusive; without an offset it is UTC")
    logs.add_argument("--until", type=_timestamp, help="ISO 8601, exclusive; without an offset it is UTC")
    logs.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"most rows listed (default {DEFAULT_LIMIT})")
    logs.add_argument("--format", choices=FORMATS, default="table", help="default table")
    listing = logs.add_mutually_exclusive_group()
    listing.add_argument(
        "--dead-letters",
        action="store_true",
        help="list runs that failed after their last retry (TB_R_SYNC_DEAD_LETTER) and when one was re-queued; "
        "re-queue a customer with `sync-pipeline requeue`",
    )
    listing.add_argument(
        "--conflicts",
        action="store_true",
        help="list records left unapplied for review (TB_R_SYNC_CONFLICT): as old as their stored row or older, "
        "yet different; the most recently seen first",
    )
    listing.add_argument(
        "--history",
        action="store_true",
        help="list the changes syncs made to stored rows (TB_R_SYNC_HISTORY: old and new values), the newest first",
    )
    logs.set_defaults(handler=_logs)


def _requeue(args: argparse.Namespace) -> int:
    """Mark a dead-lettered customer's rows for a new run, once the user typed `requeue <customer>`."""
    from sync_pipeline.engine.state.dead_letters import DeadLetters
    from sync_pipeline.engine.state.tracking import TrackingUnavailable
    from sync_pipeline.log_viewer import LogViewerError, environment_engines
    from sync_pipeline.orchestration.component import DEFS_FOLDER, declared_sync
    from sync_pipeline.settings import LOG_DB, SettingsError

    customer, expected = args.customer, f"requeue {args.customer}"
    if args.confirm != expected:
        sys.stderr.write(
            f"sync-pipeline requeue: refused, nothing re-queued: to run customer {customer} of {args.sync} again, "
            f'add --confirm "{expected}"\n'
        )
        return 2
    try:
        sync, settings = declared_sync(args.sync, Path(args.defs) if args.defs else DEFS_FOLDER)
        if settings.customers is None:
            raise SettingsError(f"sync {args.sync} does not run per customer: it has no customers to re-queue")
        entity_types = [f"{sync.entity_type(spec)}/{customer}" for spec in sync.entities]
        with environment_engines([LOG_DB], env_vars=settings.databases) as engines:
            marked = DeadLetters(engines[LOG_DB]).requeue(entity_types)
    except (SettingsError, LogViewerError) as exc:
        sys.stderr.write(f"sync-pipeline requeue: {exc}\n")
        return 2
    except TrackingUnavailable as exc:
        sys.stderr.write(f"sync-pipeline requeue: {exc}\n")
        return 1
    if not marked:
        sys.stderr.write(
            f"sync-pipeline requeue: refused: customer {customer} of {args.sync} has no dead letter "
            f"({', '.join(entity_types)}); `sync-pipeline logs --dead-letters` lists them\n"
        )
        return 1
    print(
        f"customer {customer} of {args.sync} re-queued ({marked} dead letter(s)): the sensor {args.sync}_customers "
        f"launches one run of it within {settings.customers.sensor_interval_seconds} s; a success removes the dead "
        "letter, a failure keeps it"
    )
    return 0


def _add_requeue_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    requeue = commands.add_parser(
        "requeue",
        help="run a dead-lettered customer of a sync again (its customers sensor launches the run)",
        description="The sync is found among the SyncComponent instances of the defs folder; its Log database "
        "comes from the variable its settings name for log_db (SYNC_LOG_DB_URL by default).",
    )
    requeue.add_argument("--sync", required=True, help="the sync's name, e.g. zuora")
    requeue.add_argument("--customer", required=True, help="the customer's id (its partition)")
    requeue.add_argument("--confirm", default="", help='must be "requeue <customer>"')
    requeue.add_argument("--defs", help="the defs folder holding the sync's defs.yaml (default: the package's)")
    requeue.set_defaults(handler=_requeue)


MAX_IDS_SHOWN = 10
"""Records a confirmation names, at most; the rest are counted."""


def _resend(args: argparse.Namespace) -> int:
    """Re-queue an entity's dead-lettered records (these ids, or all) once the user confirmed, so the next run
    sends each once more."""
    from sync_pipeline.engine.state.retry_queue import dead_among, queue_counts, queued_records, resend
    from sync_pipeline.engine.state.tracking import TrackingUnavailable
    from sync_pipeline.log_viewer import LogViewerError, environment_engines
    from sync_pipeline.orchestration.component import DEFS_FOLDER, declared_sync
    from sync_pipeline.settings import LOG_DB, SettingsError

    try:
        sync, settings = declared_sync(args.sync, Path(args.defs) if args.defs else DEFS_FOLDER)
        names = [spec.name for spec in sync.entities if spec.record_sink is not None]
        if args.entity not in names:
            raise SettingsError(
                f"--entity {args.entity} is not an entity of {sync.name} sent one call per record (the only ones "
                f"dead-lettered): {', '.join(names) or 'none'}"
            )
        entity_type = sync.entity_type(sync.entity(args.entity))
        with environment_engines([LOG_DB], env_vars=settings.databases) as engines:
            log_engine = engines[LOG_DB]
            if args.id:
                chosen = sorted(set(args.id))
                dead = dead_among(log_engine, entity_type, chosen)
                if len(dead) < len(chosen):
                    not_dead = ", ".join(entity_id for entity_id in chosen if entity_id not in dead)
                    sys.stderr.write(
                        f"sync-pipeline resend: refused, nothing re-queued: not dead-lettered in {entity_type}: "
                        f"{not_dead}; `sync-pipeline logs --sync {sync.name} --status Dead` lists those that are\n"
                    )
                    return 1
                shown, count = chosen[:MAX_IDS_SHOWN], len(chosen)
            else:
                count = queue_counts(log_engine, entity_type).dead
                shown = [r.entity_id for r in queued_records(log_engine, [entity_type], True, MAX_IDS_SHOWN)]
                if count == 0:
                    sys.stderr.write(f"sync-pipeline resend: nothing to re-queue: {entity_type} has no dead record\n")
                    return 1
            more = f" and {count - len(shown)} more" if count > len(shown) else ""
            what = f"{count} dead-lettered record(s) of {entity_type} ({', '.join(shown)}{more})"
            if not args.yes and not _confirmed(f"Re-queue {what}, so the next run sends each once more? [yes/no] "):
                sys.stderr.write(
                    "sync-pipeline resend: refused, nothing re-queued: not confirmed (answer yes, or add --yes)\n"
                )
                return 2
            requeued = resend(log_engine, entity_type, chosen if args.id else None)
    except (SettingsError, LogViewerError) as exc:
        sys.stderr.write(f"sync-pipeline resend: {exc}\n")
        return 2
    except TrackingUnavailable as exc:
        sys.stderr.write(f"sync-pipeline resend: {exc}\n")
        return 1
    print(
        f"{requeued} record(s) of {entity_type} re-queued ({', '.join(shown)}{more}): the next run of "
        f"{sync.job_name} sends each once more; one failing again is counted anew and dead-lettered after "
        f"{settings.retries.max_record_attempts} failed runs"
    )
    return 0


def _confirmed(question: str) -> bool:
    """Ask on the terminal; only `yes` confirms (no answer, as from a closed input, does not)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() == "yes"


def _add_resend_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    resend = commands.add_parser(
        "resend",
        help="re-queue dead-lettered records of a sync's entity (sent one call each): the next run sends them",
        description="Records a per-record sink failed retries.max_record_attempts runs are dead-lettered in "
        "TB_R_SYNC_REJECTED and no longer sent; this puts them back in the retry queue with no failed run counted. "
        "The sync is found among the SyncComponent instances of the defs folder; its Log database comes from the "
        "variable its settings name for log_db (SYNC_LOG_DB_URL by default).",
    )
    resend.add_argument("--sync", required=True, help="the sync's name, e.g. field_service")
    resend.add_argument("--entity", required=True, help="the entity, as declared (e.g. Contacts)")
    chosen = resend.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--id", action="append", help="a dead-lettered record's id (its EntityId); repeatable")
    chosen.add_argument("--all-dead", action="store_true", help="every dead-lettered record of the entity")
    resend.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    resend.add_argument("--defs", help="the defs folder holding the sync's defs.yaml (default: the package's)")
    resend.set_defaults(handler=_resend)


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
    commands.choices["ui"].add_argument("--workspace", default="workspace.yaml", help="default ./workspace.yaml")
    ddl = commands.add_parser("ddl", help="print the Log tables' DDL for a dialect")
    ddl.add_argument("dialect", choices=DIALECTS)
    ddl.set_defaults(handler=_ddl)
    _add_logs_command(commands)
    _add_requeue_command(commands)
    _add_resend_command(commands)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
