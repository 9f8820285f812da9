"""A per-entity lock in the Log database, so two syncs of one entity never send the same records.

It is a row in TB_R_SYNC_LOCK keyed by EntityType: plain INSERT/UPDATE/DELETE, so it works the same
on SQL Server, PostgreSQL, MariaDB and SQLite. The row is a lease: the holder extends it before
every API call, and a holder that died (SIGKILL, lost host) leaves a row that expires and can be
taken over. A holder that finds its lease taken stops before sending anything more.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from types import TracebackType

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.state.tracking import TrackingUnavailable, utc_now
from sync_pipeline.engine.tables import lock_table

POLL_SECONDS = 0.5


class EntityLocked(Exception):
    """Another run holds the entity's lock (and kept it past our wait)."""


class LockLost(Exception):
    """Our lease expired and another run took the lock: stop before sending anything more."""


class EntityLock:
    """Context manager holding the lock of one entity for one run."""

    def __init__(
        self,
        engine: sa.Engine,
        entity: str,
        owner: str,
        lease_seconds: float,
        wait_seconds: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._engine = engine
        self._entity = entity
        self._owner = owner[:200]
        self._lease = dt.timedelta(seconds=lease_seconds)
        self._refresh_every = lease_seconds / 4
        self._refreshed_at = 0.0
        self._wait_seconds = wait_seconds
        self._sleep = sleep
        self._mine = (lock_table.c.EntityType == entity) & (lock_table.c.Owner == self._owner)

    def __enter__(self) -> EntityLock:
        deadline = time.monotonic() + self._wait_seconds
        while not self._try_acquire():
            if time.monotonic() >= deadline:
                raise EntityLocked(f"{self._entity} is being synced by another run: {self._holder()}")
            self._sleep(POLL_SECONDS)
        self._refreshed_at = time.monotonic()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.delete(lock_table).where(self._mine))
        except sa.exc.SQLAlchemyError:
            pass  # the lease expires on its own; the sync's own outcome is what matters here

    def refresh_if_due(self) -> None:
        """Extend the lease once a quarter of it has passed: called before every API call, it costs
        a round trip only a few times per lease, yet the lease never runs out while calls go on."""
        if time.monotonic() - self._refreshed_at >= self._refresh_every:
            self.refresh()

    def refresh(self) -> None:
        """Extend the lease; raises `LockLost` if another run took it meanwhile."""
        try:
            with self._engine.begin() as conn:
                updated = conn.execute(
                    sa.update(lock_table).where(self._mine).values(ExpiresOn=utc_now() + self._lease)
                )
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot extend the lock of {self._entity}: {describe_db_error(exc)}") from exc
        if updated.rowcount != 1:
            raise LockLost(f"the lock of {self._entity} expired and was taken by another run: {self._holder()}")
        self._refreshed_at = time.monotonic()

    def _try_acquire(self) -> bool:
        now = utc_now()
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    sa.delete(lock_table).where(lock_table.c.EntityType == self._entity, lock_table.c.ExpiresOn < now)
                )
            with self._engine.begin() as conn:
                conn.execute(
                    sa.insert(lock_table).values(
                        EntityType=self._entity, Owner=self._owner, AcquiredOn=now, ExpiresOn=now + self._lease
                    )
                )
            return True
        except sa.exc.IntegrityError:
            return False
        except sa.exc.SQLAlchemyError as exc:
            raise TrackingUnavailable(f"cannot take the lock of {self._entity}: {describe_db_error(exc)}") from exc

    def _holder(self) -> str:
        try:
            with self._engine.connect() as conn:
                row = conn.execute(
                    sa.select(lock_table.c.Owner, lock_table.c.AcquiredOn, lock_table.c.ExpiresOn).where(
                        lock_table.c.EntityType == self._entity
                    )
                ).first()
        except sa.exc.SQLAlchemyError as exc:
            return f"(holder unknown: {describe_db_error(exc)})"
        if row is None:
            return "(released since)"
        return f"{row.Owner}, since {row.AcquiredOn:%Y-%m-%d %H:%M:%S} UTC, lease until {row.ExpiresOn:%H:%M:%S}"
