"""The calling process's CPU seconds so far, its threads' and its waited-for children's, user and system.

Wall time on a shared machine moves with everyone else's load; the CPU a run spent moves far less, so
a change's before/after shows in it even when the wall clocks are noisy. Standard library only, for
the children of every virtualenv (the dlt one too).
"""

from __future__ import annotations

import resource


def cpu_seconds() -> float:
    """User and system CPU seconds of this process and of its children that were waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
