"""The calling process's own peak resident set, as the kernel keeps it for its address space.

`wait4`'s `ru_maxrss` is no use for a child started from a large parent: on Linux the high-water
mark survives fork and exec, so every child would report at least the parent's size (the runner
holds Dagster and a million Ids). `VmHWM` in /proc/self/status belongs to the child's own address
space, so each benchmark child reports it itself just before it exits.
"""

from __future__ import annotations

import resource
from pathlib import Path

STATUS_FILE = Path("/proc/self/status")


def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB: `VmHWM`, or `ru_maxrss` where /proc is not available."""
    try:
        for line in STATUS_FILE.read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
