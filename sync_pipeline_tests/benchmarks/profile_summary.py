"""The top costs in a py-spy raw profile (`py-spy record --format raw`): where the samples were, by function.

Each line of the raw (collapsed) format is one stack, outermost frame first, `;`-separated, and its
sample count. "self" counts a function where it was the innermost frame (the work it did itself);
"total" counts it once in every stack it is on (its work and what it called). Functions are named
`module.function` from the file path, without line numbers, so a function's lines add up.

    python -m sync_pipeline_tests.benchmarks.profile_summary /tmp/profile.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_LIBRARY_ROOTS = ("site-packages/", "lib/python3.11/")
_PROJECT_ROOTS = ("sync_pipeline_tests/", "sync_pipeline/")


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


def costs(lines: Sequence[str]) -> tuple[Counter[str], Counter[str], int]:
    """Self and total samples per function, and all samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(frame) for frame in stack.split(";") if not frame.startswith(("thread (", "process "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    return own, total, samples


def summary(path: Path, top: int = 25) -> str:
    """The `top` functions by self samples and by total samples, with their share of all samples."""
    own, total, samples = costs(path.read_text(encoding="utf-8", errors="replace").splitlines())
    lines = [f"{samples} samples in {path}"]
    for title, counter in (("self (innermost frame)", own), ("total (on the stack)", total)):
        lines.append(f"\n  top {top} by {title}:")
        for name, count in counter.most_common(top):
            lines.append(f"  {100 * count / samples:6.1f}%  {name}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the summary of one raw profile."""
    parser = argparse.ArgumentParser(description="Top costs of a py-spy raw profile.")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(summary(args.profile, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
