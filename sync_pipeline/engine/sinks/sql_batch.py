"""Built batches into a table: the sink step of an entity whose destination is a SQL table.

Each batch's records are mapped to the table's columns (the field map, else the model's own names),
their JSON-facing values turned back into what the column holds (ISO text into a timestamp, GUID text
into a uuid), and written by the entity's SQL sink: upserted with last write wins, or chosen columns of
matched rows updated. A record the table refuses, or an update matching no row, is quarantined in
TB_R_SYNC_REJECTED with its reason, and the others are written; each batch's write is one SchedulerLog
row. A target that cannot be read or written stops the entity (`SqlSinkUnavailable`): writing a batch
again is harmless, so nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.audit.scheduler_log import ApiCall
from sync_pipeline.engine.batching import Batch
from sync_pipeline.engine.columns import values_of
from sync_pipeline.engine.db_errors import describe_db_error
from sync_pipeline.engine.mapping.field_map import FieldMap
from sync_pipeline.engine.sinks.http_batch import DeliveryCounts, Refusals
from sync_pipeline.engine.sinks.record_details import DetailFetcher
from sync_pipeline.engine.sinks.sql_deletions import DeletionCounts, MissingRows, SeenKeys
from sync_pipeline.engine.sinks.sql_rows import Key, RefusedRecord, SqlSinkUnavailable
from sync_pipeline.engine.sinks.sql_target import RunTransaction, SqlTarget
from sync_pipeline.engine.sinks.sql_update import SqlUpdateSink
from sync_pipeline.engine.sinks.sql_upsert import SqlUpsertSink, UpsertCounts
from sync_pipeline.engine.state.change_history import ChangedRow, ChangeHistory, ConflictingRow
from sync_pipeline.engine.state.retry_queue import take_off_queue
from sync_pipeline.engine.state.tracking import Rejection, TrackingStore, TrackingUnavailable
from sync_pipeline.specs.model import RecordDetails, SqlSinkSpec


@dataclass
class TableCounts(DeliveryCounts):
    """Delivery counts of a SQL sink (`sent` = inserted + updated) and the records it left as they were."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    """Records older than or as old as the stored row (last write wins): read, not written."""
    conflicts: int = 0
    """Of those, records that differ from the stored row: flagged for review, not applied."""
    details_fetched: int = 0
    details_failed: int = 0
    """GETs of the rows' details (a workflow's export) made, and those that failed (tried again next run)."""


def reflect_table(engine: sa.Engine, qualified_name: str) -> sa.Table:
    """The target table as the database declares it (keys, constraints, column types); raises
    `SqlSinkUnavailable` when it cannot be read."""
    schema, _, name = qualified_name.rpartition(".")
    try:
        return sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=engine)
    except sa.exc.NoSuchTableError:
        raise SqlSinkUnavailable(f"table {qualified_name} does not exist in the target database") from None
    except sa.exc.SQLAlchemyError as exc:
        raise SqlSinkUnavailable(f"cannot read table {qualified_name}: {describe_db_error(exc)}") from exc


def table_sink(
    target: SqlTarget,
    table: sa.Table,
    spec: SqlSinkSpec,
    record_fields: Sequence[str],
    details: DetailFetcher | None = None,
) -> SqlUpsertSink | SqlUpdateSink:
    """The SQL sink a spec declares, on the reflected table; an upsert writes the spec's columns, else every
    field of the records (`record_fields`), and leaves the table's other columns alone. A wrong key or
    column raises ValueError naming it."""
    if spec.mode == "upsert":
        assert spec.timestamp_column is not None  # the declaration requires it
        written = spec.columns or tuple(name for name in record_fields if name != spec.timestamp_column)
        if spec.partition_column and spec.partition_column not in written:
            written = (*written, spec.partition_column)
        return SqlUpsertSink(target, table, spec.key_columns, spec.timestamp_column, written, spec.history, details)
    assert spec.columns is not None
    return SqlUpdateSink(target, table, spec.key_columns, spec.columns, spec.forward_only)


def column_value(column: sa.Column[Any], value: Any) -> Any:
    """A built record's value as `column` stores it: a timestamp from its ISO text (UTC, without offset,
    for a column without time zone), a uuid or an integer from its text (a key comes as its EntityId);
    anything else as it is. The same key then compares equal with what the database returns."""
    convert = text_converter(column) if isinstance(value, str) else None
    return value if convert is None else convert(value)


def text_converter(column: sa.Column[Any]) -> Callable[[str], Any] | None:
    """How `column_value` turns a text into what `column` stores; None where the text is kept as it is.
    Chosen once per column, so a batch pays only for the conversions themselves."""
    python_type = _python_type(column)
    if python_type is dt.datetime:
        return _naive_utc if not getattr(column.type, "timezone", False) else dt.datetime.fromisoformat
    if python_type is dt.date:
        return dt.date.fromisoformat
    if python_type is uuid.UUID:
        return uuid.UUID
    if python_type is int:  # an integer key arrives as its EntityId text
        return int
    return None


def texts_converter(column: sa.Column[Any]) -> Callable[[list[str]], list[Any]] | None:
    """`text_converter` of a whole column of texts at once: one `map` in C, no Python call per value
    where it can (a column of UTC timestamps)."""
    convert = text_converter(column)
    if convert is None:
        return None
    if convert is _naive_utc:
        return _naive_utc_texts
    return lambda texts: list(map(convert, texts))


_UTC_OFFSET = "+00:00"
_SHORTEST_UTC_TIME = len("2026-11-01" + _UTC_OFFSET) + 1


def _naive_utc(text: str) -> dt.datetime:
    """ISO text as a timestamp without time zone: one with an offset turned into UTC first. A date and
    time in UTC already (as the record builder writes a source's UTC timestamp) only loses its offset:
    parsed without it, six times faster than converting an aware timestamp."""
    if text.endswith(_UTC_OFFSET) and len(text) >= _SHORTEST_UTC_TIME:
        return dt.datetime.fromisoformat(text.removesuffix(_UTC_OFFSET))
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is None else parsed.astimezone(dt.UTC).replace(tzinfo=None)


def _naive_utc_texts(texts: list[str]) -> list[dt.datetime]:
    """`_naive_utc` of each text; a column all in UTC (the usual one) by the string methods themselves."""
    if all(map(str.endswith, texts, repeat(_UTC_OFFSET))) and min(map(len, texts)) >= _SHORTEST_UTC_TIME:
        return list(map(dt.datetime.fromisoformat, map(str.removesuffix, texts, repeat(_UTC_OFFSET))))
    return list(map(_naive_utc, texts))


def _python_type(column: sa.Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:  # a dialect type without one: take the value as it is
        return None


class SqlBatchSender:
    """A SQL-sink entity's sink step: each batch's refusals kept, its records mapped, converted and written;
    `fixed` columns (the run's customer, say) are set on every row; with `missing`, the keys written are
    kept, to mark at the end what a complete listing left out; with `history`, each change and conflict is
    kept. With a run `transaction` (the sink writes through it), nothing is kept until `commit`."""

    def __init__(
        self,
        entity: str,
        sink: SqlUpsertSink | SqlUpdateSink,
        mapping: FieldMap | None,
        tracking: TrackingStore,
        refusals: Refusals,
        counts: TableCounts,
        counting: threading.Lock,
        fixed: Mapping[str, Any] | None = None,
        missing: MissingRows | None = None,
        history: ChangeHistory | None = None,
        transaction: RunTransaction | None = None,
        queued: frozenset[str] = frozenset(),
    ) -> None:
        self.counts = counts
        self._queued = queued
        """The records read again from the retry queue: taken off it once a batch writes (or keeps) them."""
        self._through: list[str] = []
        """Queued records a run transaction wrote: taken off the queue when it commits, not before."""
        self.missing = missing
        """Set when the sink marks the rows a complete listing left out (a deleted column)."""
        self.history = history
        self.rolled_back = False
        """Set when the run's writes were undone (`roll_back`)."""
        self._transaction = transaction
        self._applied_at_once = transaction is None
        self._fixed = dict(fixed or {})
        self._entity = entity
        self._sink = sink
        self._mapping = mapping
        self._tracking = tracking
        self._refusals = refusals
        self._counting = counting
        self._target = sink.table.fullname
        self._seen = SeenKeys()
        self._refused_any = False
        self._converters = [
            (column.name, convert) for column in sink.table.c if (convert := text_converter(column)) is not None
        ]
        """The columns whose text values `_rows` converts, and how."""
        self._column_converters = {
            column.name: texts for column in sink.table.c if (texts := texts_converter(column)) is not None
        }
        """The same conversions, of a whole column of texts at once."""

    def send(self, batch: Batch) -> None:
        """Write one batch; what the table refused or could not match is quarantined by EntityId."""
        refused = list(batch.refused)
        refused_rows = batch.refused_rows
        entity_ids, records = batch.entity_ids, batch.records
        if self._mapping is not None:
            mapped = self._mapping.map_batch(records)
            refused += [Rejection(entity_ids[n], None, f"not written: {error}") for n, error in mapped.refused.items()]
            refused_rows += len(mapped.refused)
            entity_ids = [entity_ids[n] for n in mapped.positions]
            records = mapped.records
        rows, row_ids = self._rows(entity_ids, records, refused)
        refused_rows += len(entity_ids) - len(row_ids)
        self._refusals.record(refused, refused_rows)
        if not rows:
            self._refused_any |= bool(refused)
            return
        started = time.perf_counter()
        by_key = dict(zip(self._sink.keys_of(rows), row_ids, strict=True))
        counts = self._sink.write(rows)  # SqlSinkUnavailable stops the entity
        not_written = [
            Rejection(by_key.get(refusal.key, str(refusal.key)), None, f"not written: {_why(refusal)}")
            for refusal in counts.refused
        ]
        if isinstance(counts, UpsertCounts):
            inserted, unchanged = counts.inserted, counts.skipped
            self._keep_history(counts)
        else:
            inserted, unchanged = 0, counts.kept  # a forward-only status already as far or further on
            not_written += [
                Rejection(by_key.get(key, str(key)), None, f"not written: no row of {self._target} has key {key}")
                for key in counts.not_found
            ]
        updated = counts.updated
        self._refusals.record(not_written)
        if self._queued:
            again = {rejection.entity_id for rejection in not_written}
            through = [
                entity_id for entity_id in by_key.values() if entity_id in self._queued and entity_id not in again
            ]
            if through and self._transaction is not None:  # off the queue once the run's writes commit
                with self._counting:
                    self._through.extend(through)
            elif through:
                take_off_queue(self._tracking.engine, self._entity, through)
        with self._counting:
            self._seen.add(by_key.keys())
            self._refused_any |= bool(refused or not_written)
        call = ApiCall(self._target, len(rows), None, round((time.perf_counter() - started) * 1000))
        self._tracking.record_call(self._entity, call)
        with self._counting:
            self.counts.sent += inserted + updated
            self.counts.inserted += inserted
            self.counts.updated += updated
            self.counts.unchanged += unchanged
            self.counts.batches_ok += 1
            if isinstance(counts, UpsertCounts):
                self.counts.conflicts += len(counts.conflicts)
                self.counts.details_fetched += counts.details_fetched
                self.counts.details_failed += counts.details_failed

    @property
    def details(self) -> RecordDetails | None:
        """The details the sink reads for each row it writes, if it does."""
        if isinstance(self._sink, SqlUpsertSink) and self._sink.details is not None:
            return self._sink.details.details
        return None

    def commit(self) -> None:
        """At the end of a run that went through: commit its transaction, if it has one, and mark its
        changes applied. A database error raises `SqlSinkUnavailable` (the database undoes the run)."""
        if self._transaction is None:
            return
        try:
            self._transaction.commit()
        except sa.exc.SQLAlchemyError as exc:
            raise SqlSinkUnavailable(
                f"cannot commit the run's writes to {self._target}: {describe_db_error(exc)}"
            ) from exc
        if self.history is not None:
            self.history.applied()
        if self._through:
            take_off_queue(self._tracking.engine, self._entity, self._through)

    def roll_back(self) -> str | None:
        """After a run that stopped: undo its transaction, if it has one, and drop its unapplied changes;
        what was undone, for the run's reason, or None without a run transaction or before any write."""
        if self._transaction is None or not self._transaction.started:
            return None
        self.rolled_back = True
        failed = self._transaction.rollback()
        undone = f"nothing of this run kept in {self._target} (rolled back)"
        if failed:
            undone += f"; the rollback itself failed ({failed}), so the database undoes the run when it ends"
        if self.history is not None:
            try:
                self.history.discard()
            except TrackingUnavailable as exc:
                undone += f"; its changes stay unapplied in the history: {exc}"
        return undone

    def _keep_history(self, counts: UpsertCounts) -> None:
        """The batch's changes and conflicts into the Log database (`TrackingUnavailable` stops the entity)."""
        if self.history is None:
            return
        changes = [ChangedRow(self.record_key(c.key), "updated", c.old, c.new) for c in counts.changes]
        self.history.record(changes, applied=self._applied_at_once)
        conflicts = counts.conflicts
        self.history.flag([ConflictingRow(self.record_key(c.key), c.reason, c.stored, c.incoming) for c in conflicts])

    def _confirm_gone(self) -> Callable[[list[Key]], list[bool]] | None:
        """With details, a row left out is confirmed gone by its detail's 404 before it is marked."""
        sink = self._sink
        if not isinstance(sink, SqlUpsertSink) or sink.details is None:
            return None
        fetcher, names = sink.details, sink.key_columns
        return lambda keys: fetcher.gone([dict(zip(names, key, strict=True)) for key in keys])

    def record_key(self, key: Key) -> str:
        """A row's key as the history names it: its key values but the run's fixed ones (the customer)."""
        names = self._sink.key_columns
        return "|".join(str(value) for name, value in zip(names, key, strict=True) if name not in self._fixed)

    def mark_missing(self, now: dt.datetime) -> DeletionCounts | None:
        """After a complete listing: mark the stored rows it did not include deleted (and clear those it
        brought back); None, marking nothing, when a record was refused, since its key is not known."""
        if self._refused_any or self.missing is None:
            return None
        marked = self.missing.mark(self._sink.target, self._seen, now, self._confirm_gone())
        if self.history is not None:
            deleted = self.missing.deleted_column
            changes = [
                ChangedRow(self.record_key(key), "deleted", {deleted: None}, {deleted: now}) for key in marked.gone
            ]
            changes += [
                ChangedRow(self.record_key(key), "restored", {deleted: stamp}, {deleted: None})
                for key, stamp in marked.back
            ]
            self.history.record(changes, applied=self._applied_at_once)
        return marked

    def _rows(
        self, entity_ids: Sequence[str], records: Sequence[Mapping[str, Any]], refused: list[Rejection]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """The records with values as their columns store them (`column_value`), converted a column at a time;
        one that cannot be converted is refused (found out record by record)."""
        converted: list[tuple[str, list[Any]]] = []
        for name, convert in self._converters:
            values = values_of(records, name)
            types = set(map(type, values))
            if str not in types:
                continue
            try:
                if types == {str}:
                    converted.append((name, self._column_converters[name](values)))
                else:
                    converted.append((name, [convert(value) if isinstance(value, str) else value for value in values]))
            except ValueError:
                return self._rows_one_by_one(entity_ids, records, refused)
        rows: list[dict[str, Any]] = [{**self._fixed, **record} for record in records]
        for name, values in converted:
            for row, value in zip(rows, values, strict=True):
                row[name] = value
        return rows, list(entity_ids)

    def _rows_one_by_one(
        self, entity_ids: Sequence[str], records: Sequence[Mapping[str, Any]], refused: list[Rejection]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """`_rows` of a batch holding a value that cannot be converted: each such record refused with its reason."""
        rows: list[dict[str, Any]] = []
        kept: list[str] = []
        for entity_id, record in zip(entity_ids, records, strict=True):
            row: dict[str, Any] = {**self._fixed, **record}
            for name, convert in self._converters:
                value = record.get(name)
                if not isinstance(value, str):
                    continue
                try:
                    row[name] = convert(value)
                except ValueError as exc:
                    refused.append(Rejection(entity_id, None, f"not written: column {name}: {exc}"))
                    break
            else:
                rows.append(row)
                kept.append(entity_id)
        return rows, kept


def _why(refusal: RefusedRecord) -> str:
    return f"column {refusal.column}: {refusal.reason}" if refusal.column else refusal.reason
