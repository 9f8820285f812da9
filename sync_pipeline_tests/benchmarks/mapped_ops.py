"""What one Dagster op per batch would cost: a job fanning out N no-op mapped ops, on a SQLite instance.

The sync sends batches from engine units inside one asset step instead of one op per batch; this
prints why. A million rows are 334 batches of 3,000: at the per-op cost printed here, that many ops
would add seconds of pure bookkeeping (events written to the instance's storage) to the run.

    python -m sync_pipeline_tests.benchmarks.mapped_ops [--ops 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence

import dagster as dg


def build_job(ops: int) -> dg.JobDefinition:
    """`fan_out` yields `ops` dynamic outputs, each handled by a no-op `send_batch`, in one process."""

    @dg.op(out=dg.DynamicOut(int))
    def fan_out() -> Iterator[dg.DynamicOutput[int]]:
        for number in range(ops):
            yield dg.DynamicOutput(number, mapping_key=str(number))

    @dg.op
    def send_batch(number: int) -> int:
        return number

    @dg.job(executor_def=dg.in_process_executor)
    def one_op_per_batch() -> None:
        fan_out().map(send_batch)

    return one_op_per_batch


def seconds_per_run(ops: int) -> float:
    """Wall time of one run of the job with `ops` mapped ops on a fresh SQLite-backed instance."""
    job = build_job(ops)
    with tempfile.TemporaryDirectory() as home, dg.instance_for_test(temp_dir=home) as instance:
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance)
        seconds = time.perf_counter() - started
    assert result.success
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Time the job with no mapped op and with `--ops`, and print the cost per op."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    empty = statistics.median(seconds_per_run(0) for _ in range(args.repeat))
    full = statistics.median(seconds_per_run(args.ops) for _ in range(args.repeat))
    per_op_ms = (full - empty) / args.ops * 1000
    print(f"{args.ops} mapped no-op ops: {full:.2f} s against {empty:.2f} s with none: {per_op_ms:.1f} ms per op")
    print(f"at 334 batches (1,000,000 rows of 3,000): {per_op_ms * 334 / 1000:.1f} s of op bookkeeping per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
