"""`sync-pipeline logs` for people: the log queries' results as a table, CSV or JSON.

The databases are reached through the same environment variables the Dagster resources read, so
the viewer needs no Dagster instance. pandas is imported only here, when a listing is rendered.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING

import sqlalchemy as sa

from sync_pipeline.engine.audit.log_queries import LogRow, PendingCount
from sync_pipeline.engine.state.dead_letters import DeadLetter
from sync_pipeline.resources.database import DatabaseUrlError, create_sync_engine
from sync_pipeline.specs.tamhr import DATABASE_URL_ENV_VARS, ENTITIES_BY_NAME

if TYPE_CHECKING:  # pandas is for reporting only: a sync run never loads it
    import pandas as pd

FORMATS = ("table", "csv", "json")
TABLE_TEXT_WIDTH = 100
"""Longest exception message shown in `table` format; csv and json carry it whole."""
HOW_TO_SET_THE_ENVIRONMENT = (
    'for the demo run `eval "$(.venv/bin/sync-pipeline env)"` first; for a deployment set the SYNC_* '
    "variables the code location reads (SYNC_DEFAULT_DB_URL, SYNC_ESS_DB_URL, SYNC_LOG_DB_URL)"
)


class LogViewerError(Exception):
    """A problem the viewer reports to its user in one line: a missing variable, an unreadable database."""


def needed_databases(entities: Sequence[str], pending: bool) -> list[str]:
    """Resource keys of the databases a listing reads: the Log database, and the sources for Pending."""
    sources = {key for name in entities for key in ENTITIES_BY_NAME[name].databases} if pending else set()
    return ["log_db", *sorted(sources)]


@contextmanager
def environment_engines(
    resource_keys: Iterable[str],
    environ: Mapping[str, str] = os.environ,
    env_vars: Mapping[str, str] = DATABASE_URL_ENV_VARS,
) -> Iterator[dict[str, sa.Engine]]:
    """Engines from the variables the Dagster resources read (`SYNC_LOG_DB_URL`, ...; for another sync, those its
    settings' `databases` name), disposed on exit."""
    engines: dict[str, sa.Engine] = {}
    try:
        for key in resource_keys:
            env_var = env_vars[key]
            url = environ.get(env_var)
            if not url:
                raise LogViewerError(
                    f"{env_var} is not set: it holds the SQLAlchemy URL of {key}; {HOW_TO_SET_THE_ENVIRONMENT}"
                )
            try:
                engines[key] = create_sync_engine(url, env_var)
            except DatabaseUrlError as exc:
                raise LogViewerError(str(exc)) from None
        yield engines
    finally:
        for engine in engines.values():
            engine.dispose()


def log_frame(rows: Iterable[LogRow]) -> pd.DataFrame:
    """SchedulerLog rows as a table, one column per `LogRow` field."""
    import pandas as pd

    columns = list(LogRow.__dataclass_fields__)
    return pd.DataFrame([asdict(row) for row in rows], columns=columns, dtype=object)


def pending_frame(counts: Iterable[PendingCount]) -> pd.DataFrame:
    """Pending counts as a table, one row per entity."""
    import pandas as pd

    columns = list(PendingCount.__dataclass_fields__)
    return pd.DataFrame([asdict(count) for count in counts], columns=columns, dtype=object)


def dead_letter_frame(letters: Iterable[DeadLetter]) -> pd.DataFrame:
    """Dead-lettered runs (TB_R_SYNC_DEAD_LETTER) as a table, the most recent failure first."""
    import pandas as pd

    columns = list(DeadLetter.__dataclass_fields__)
    return pd.DataFrame([asdict(letter) for letter in letters], columns=columns, dtype=object)


def records_frame(records: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """Rows of a Log table, as read, as a table."""
    import pandas as pd

    return pd.DataFrame(list(records), dtype=object)


def render(frame: pd.DataFrame, output_format: str) -> str:
    """The frame as `table` (for people), `csv` or `json` (records); timestamps ISO 8601, in UTC."""
    import pandas as pd

    if output_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    as_table = output_format == "table"
    records = [
        {name: _cell(value, as_table) for name, value in record.items()} for record in frame.to_dict(orient="records")
    ]
    if output_format == "json":
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    cells = pd.DataFrame(records, columns=frame.columns)
    if output_format == "csv":
        return str(cells.to_csv(index=False, lineterminator="\n"))
    if cells.empty:
        return "(no rows)\n"
    return str(cells.to_string(index=False)) + "\n"


def _cell(value: object, as_table: bool) -> object:
    """One value as the format shows it: None for a missing value (blank in a table), ISO timestamps."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "" if as_table else None
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds") if as_table else value.isoformat()
    if hasattr(value, "item"):  # a numpy scalar from the frame: back to the plain Python value
        value = value.item()
    if as_table and isinstance(value, str) and len(value) > TABLE_TEXT_WIDTH:
        return value[: TABLE_TEXT_WIDTH - 1] + "…"
    return value
