"""What a field map and a row hash cost per batch: CPU only, no database, no network.

A batch of built work-order records goes through a 10-field map (renames, two of them into a nested
object, one text-to-int conversion, one value map) and then each mapped record is hashed as
TB_R_SYNC_ROW_HASH stores it. It prints the best of `--repeat` runs per batch and in records/s.

    python -m sync_pipeline_tests.benchmarks.field_map [--batch 3000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sync_pipeline.engine.mapping.field_map import FieldMap, FieldRule
from sync_pipeline.engine.mapping.payload import Record
from sync_pipeline.engine.state.row_hashes import row_hash
from sync_pipeline.specs.model import Field, FieldType

SOURCE_FIELDS = (
    Field("Id", FieldType.GUID),
    Field("Title", FieldType.TEXT),
    Field("Code", FieldType.TEXT),
    Field("State", FieldType.TEXT),
    Field("Priority", FieldType.INT),
    Field("Hours", FieldType.DECIMAL),
    Field("Urgent", FieldType.BOOL),
    Field("PlannedOn", FieldType.DATETIME),
    Field("Street", FieldType.TEXT),
    Field("City", FieldType.TEXT),
)
RULES = {
    "id": FieldRule(source="Id"),
    "label": FieldRule(source="Title"),
    "code": FieldRule(source="Code", type=FieldType.INT),
    "status": FieldRule(source="State", value_map={"O": "open", "C": "closed", "H": "on hold"}),
    "priority": FieldRule(source="Priority"),
    "hours": FieldRule(source="Hours"),
    "urgent": FieldRule(source="Urgent"),
    "plannedOn": FieldRule(source="PlannedOn"),
    "address.street": FieldRule(source="Street"),
    "address.city": FieldRule(source="City"),
}


def built_records(count: int) -> list[Record]:
    """`count` work orders as `RecordBuilder` makes them: JSON values typed by the source's fields."""
    return [
        {
            "Id": str(uuid.UUID(int=n)),
            "Title": f"Work order {n}",
            "Code": str(100_000 + n),
            "State": "OCH"[n % 3],
            "Priority": n % 5,
            "Hours": n % 8 + 0.5,
            "Urgent": n % 7 == 0,
            "PlannedOn": f"2024-01-{n % 28 + 1:02d}T08:30:00",
            "Street": f"{n} Main St",
            "City": "Lyon",
        }
        for n in range(count)
    ]


def best_seconds(work: Callable[[], Any], repeat: int) -> float:
    """The fastest of `repeat` runs of `work`."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)
    field_map = FieldMap(RULES, SOURCE_FIELDS)
    records = built_records(args.batch)
    mapped = field_map.map_batch(records).records
    assert len(mapped) == args.batch, "every generated record must map"
    for name, work in (
        ("map 10 fields (1 value map)", lambda: field_map.map_batch(records)),
        ("row hash", lambda: list(map(row_hash, mapped))),
    ):
        seconds = best_seconds(work, args.repeat)
        print(f"{name:<28} {seconds * 1000:7.2f} ms per {args.batch:,}   {args.batch / seconds:>12,.0f} records/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
