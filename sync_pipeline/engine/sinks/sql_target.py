"""Where a SQL sink's reads and writes go: the engine itself (each write its own transaction), or one
transaction for a whole run, so that a run that fails leaves the table as it was.

The sinks only ask for `begin()` (a unit of writes that commits or rolls back as one) and `connect()`
(reads). Inside a run transaction `begin()` is a SAVEPOINT on the run's one connection: a batch the
database refuses part of is rolled back to it and written again record by record, as it is outside,
while everything stays uncommitted until `commit()`. Reads go on the same connection, so a run sees
its own uncommitted rows (a key met again in a later batch compares with what this run wrote).

One connection means one thing at a time: calls from several threads (batches in flight) take turns.
On SQLite the transaction is opened with an explicit BEGIN, since the driver otherwise starts one only
before a write and would commit at the first savepoint's release; the database is then locked for
writes by other connections until the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import sqlalchemy as sa

from sync_pipeline.engine.db_errors import describe_db_error


class SqlTarget(Protocol):
    """What a SQL sink needs of its database: its dialect, reads and units of writes."""

    @property
    def dialect(self) -> sa.Dialect: ...

    def connect(self) -> AbstractContextManager[sa.Connection]: ...

    def begin(self) -> AbstractContextManager[sa.Connection]: ...


class RunTransaction:
    """One transaction for everything a run writes to a database, committed or rolled back at its end."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._turn = threading.RLock()
        self._connection: sa.Connection | None = None
        self._transaction: sa.RootTransaction | None = None

    @property
    def dialect(self) -> sa.Dialect:
        """The database's dialect, as the engine's."""
        return self.engine.dialect

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """The run's connection, for reads that see what the run has written so far."""
        with self._turn:
            yield self._open()

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A unit of writes inside the run's transaction (a SAVEPOINT): undone alone if it raises."""
        with self._turn:
            connection = self._open()
            with connection.begin_nested():
                yield connection

    @property
    def started(self) -> bool:
        """Whether the run has read or written through it yet (its transaction is open)."""
        return self._transaction is not None

    def commit(self) -> None:
        """Make the run's writes permanent (nothing happens if it wrote nothing)."""
        with self._turn:
            if self._transaction is not None and self._connection is not None:
                self._transaction.commit()
                self._close()

    def rollback(self) -> str | None:
        """Undo everything the run wrote; why the rollback itself failed (the connection was lost, so the
        database undoes it anyway), or None."""
        with self._turn:
            if self._transaction is None:
                return None
            try:
                self._transaction.rollback()
                return None
            except sa.exc.SQLAlchemyError as exc:
                return describe_db_error(exc)
            finally:
                self._close()

    def _open(self) -> sa.Connection:
        if self._connection is None:
            connection = self.engine.connect()
            self._transaction = connection.begin()
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN")
            self._connection = connection
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._transaction = None
