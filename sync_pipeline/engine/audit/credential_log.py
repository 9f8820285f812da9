"""TB_R_SYNC_CREDENTIAL_USE: each token a customer's run called the API with, never the token itself.

A row is inserted when the run begins calling with a token (`requested`, `refreshed` or `reused`)
and its call count set when the run moves to the next token or ends: two short transactions per
token, so a run that dies still leaves the token request it made. The audit trail must not stop a
pull: a Log database that cannot be written is logged as a warning and the calls go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.state.tracking import utc_now
from sync_pipeline.engine.tables import credential_use_table as _table


@dataclass(frozen=True)
class CredentialUser:
    """Whose credentials a run uses: the customer's EntityType (`<EntityType>/<customer>`), the customer,
    its OAuth client id and the Dagster run."""

    entity_type: str
    customer: str
    client_id: str
    run_id: str | None


class CredentialUseLog:
    """A `CredentialObserver` writing one row per token to the Log database."""

    def __init__(self, engine: sa.Engine, user: CredentialUser, log: logging.Logger) -> None:
        self._engine = engine
        self._user = user
        self._log = log
        self._row_id: int | None = None

    def token_began(self, event: str) -> None:
        """Insert the token's row, with no calls yet."""
        user = self._user
        row = {
            "EntityType": user.entity_type,
            "Customer": user.customer,
            "ClientId": user.client_id,
            "Event": event,
            "UsedAt": utc_now(),
            "Calls": 0,
            "RunId": user.run_id,
        }
        self._row_id = None
        try:
            with self._engine.begin() as conn:
                inserted = conn.execute(sa.insert(_table).values(row)).inserted_primary_key
            self._row_id = None if inserted is None else int(inserted[0])
        except sa.exc.SQLAlchemyError as exc:
            self._warn(f"a {event} token", exc)

    def token_ended(self, calls: int) -> None:
        """Set the calls the token carried on its row (none if its insert failed)."""
        if self._row_id is None:
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.update(_table).where(_table.c.Id == self._row_id).values(Calls=calls))
        except sa.exc.SQLAlchemyError as exc:
            self._warn(f"the {calls} calls of a token", exc)

    def _warn(self, what: str, exc: sa.exc.SQLAlchemyError) -> None:
        self._log.warning(
            f"{self._user.entity_type}: cannot log {what} in {_table.name}, the calls go on: {describe_db_error(exc)}"
        )
