"""SchedulerLog rows: one per batch API call, in the shape the existing TAMHR table has."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.tables import scheduler_log_table

SUCCESS = "Success"
FAILURE = "Failure"
RUN_ID = "RunId"
"""AdditionalInformation key of the Dagster run that made the call (the table's columns are fixed by TAMHR)."""
ACTIVITY_PREFIX = "Sync Batch: "
"""SchedulerLog `Activity` of this job's rows is this prefix and the entity name."""
MAX_EXCEPTION_MESSAGE = 4000


def activity(entity: str) -> str:
    """The SchedulerLog `Activity` of an entity's batch calls."""
    return f"{ACTIVITY_PREFIX}{entity}"


@dataclass(frozen=True)
class ApiCall:
    """What one batch call did: enough to write its SchedulerLog row and count it."""

    endpoint_url: str
    batch_size: int
    http_status: int | None
    duration_ms: int
    error: str | None = None
    attempt: int = 1

    @property
    def ok(self) -> bool:
        """A call succeeded when it got a 2xx and nothing else went wrong."""
        return self.error is None


class SchedulerLogWriter:
    """Builds and writes SchedulerLog rows; the constant columns come from the settings.

    `run_id` is the Dagster run the calls belong to, written into AdditionalInformation as `RunId`
    so an alert about failed calls can link the run that made them.
    """

    def __init__(self, constants: Mapping[str, str], run_id: str | None = None) -> None:
        self._constants = dict(constants)
        self._run_id = run_id

    def row(self, entity: str, call: ApiCall, now: dt.datetime | None = None) -> dict[str, Any]:
        """The SchedulerLog row for one call: new GUID ID, UTC CreatedOn, JSON details."""
        details: dict[str, Any] = {
            "EndpointUrl": call.endpoint_url,
            "BatchSize": call.batch_size,
            "HttpResponseCode": call.http_status,
            "DurationMs": call.duration_ms,
            "Attempt": call.attempt,
        }
        if self._run_id is not None:
            details[RUN_ID] = self._run_id
        if call.error is not None:
            details["ExceptionMessage"] = call.error[:MAX_EXCEPTION_MESSAGE]
        return {
            **self._constants,
            "ID": uuid.uuid4(),
            "Activity": activity(entity),
            "Status": SUCCESS if call.ok else FAILURE,
            "AdditionalInformation": json.dumps(details, ensure_ascii=False),
            "CreatedOn": (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None),
            "RowStatus": True,
            "ExceptionMessage": None if call.error is None else call.error[:MAX_EXCEPTION_MESSAGE],
        }

    def write(self, conn: sa.Connection, entity: str, call: ApiCall) -> None:
        """Insert the call's row on `conn`, inside whatever transaction the caller holds."""
        conn.execute(sa.insert(scheduler_log_table), self.row(entity, call))
