"""The top costs in a py-spy raw profile (`py-spy record --threads --idle --format raw`), thread by thread.

Each line of the raw (collapsed) format is one stack of one thread, outermost frame first,
`;`-separated, and its sample count; with `--threads` the first frame names the thread
(`thread (tid): name`), and with `--idle` a thread is sampled while it waits too, so a thread's
samples divided by the rate are its wall seconds. Threads are grouped by name (every `api-call`
thread together). Within a group, "self" counts a function where it was the innermost frame (its own
work, or its wait), "total" once in every stack it is on (its work and what it called); the totals
are shown for the project's functions, but for the entry points on nearly every stack. Functions are named
`module.function` from the file path, without line numbers, so a function's lines add up.

    python -m sync_pipeline_tests.benchmarks.profile_summary /tmp/profile.txt [--rate 100] [--top 15]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \(\d+\)(?:: (?P<name>.*))?$")
_LIBRARY_ROOTS = ("site-packages/", "lib/python3.11/")
_PROJECT_ROOTS = ("sync_pipeline_tests/", "sync_pipeline/")
PROJECT_MODULES = ("sync_pipeline.",)
NEARLY_ALL = 0.98
"""A function on this share of a thread's stacks is its entry point, not a cost."""


def frame_name(frame: str) -> str:
    """`module.function` of a py-spy frame `function (path/to/module.py:line)`; the frame itself if not one."""
    found = _FRAME.match(frame)
    if found is None:
        return frame
    module = _module_path(found["file"]).removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    return f"{module}.{found['function']}"


def _module_path(path: str) -> str:
    """The path from its import root: after site-packages or the standard library's folder, or from the project's."""
    for root in _LIBRARY_ROOTS:
        if root in path:
            return path.rsplit(root, 1)[1]
    for root in _PROJECT_ROOTS:
        if root in path:
            return root + path.rsplit(root, 1)[1]
    return path


@dataclass
class ThreadCosts:
    """One group of threads' samples: all of them, and per function where it was innermost and on the stack."""

    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)


def costs(lines: Sequence[str]) -> dict[str, ThreadCosts]:
    """Samples per thread group (by thread name, `thread` when unnamed), and per function within each."""
    groups: dict[str, ThreadCosts] = defaultdict(ThreadCosts)
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        thread = _THREAD.match(frames[0])
        group = "thread"
        if thread is not None:
            group = thread["name"] or group
            frames = frames[1:]
        named = [frame_name(frame) for frame in frames if not frame.startswith("process ")]
        costs_of = groups[group]
        count = int(count_text)
        costs_of.samples += count
        if named:
            costs_of.own[named[-1]] += count
        for name in set(named):
            costs_of.total[name] += count
    return dict(groups)


def summary(path: Path, rate: float, top: int = 15) -> str:
    """Each thread group's wall seconds, its `top` functions by self samples, and its `top` functions of the
    project by total samples (those on nearly every stack left out), each with its share of the group."""
    groups = costs(path.read_text(encoding="utf-8", errors="replace").splitlines())
    lines = [f"{path}: {sum(g.samples for g in groups.values())} samples at {rate:g} Hz"]
    for name, group in sorted(groups.items(), key=lambda item: -item[1].samples):
        if group.samples < rate / 10:  # under 0.1 s: not worth a section
            continue
        lines.append(f"\n  thread {name}: {group.samples / rate:.1f} s")
        project = Counter(
            {
                function: count
                for function, count in group.total.items()
                if function.startswith(PROJECT_MODULES) and count < NEARLY_ALL * group.samples
            }
        )
        for title, counter in ((f"top {top} by self", group.own), (f"top {top} of the project by total", project)):
            lines.append(f"    {title}:")
            lines += [
                f"    {100 * count / group.samples:6.1f}%  {function}" for function, count in counter.most_common(top)
            ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the summary of one raw profile."""
    parser = argparse.ArgumentParser(description="Top costs of a py-spy raw profile, thread by thread.")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--rate", type=float, default=100.0, help="the samples per second it was recorded at")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    print(summary(args.profile, args.rate, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
