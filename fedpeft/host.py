"""The CPUs this process may use.

The engine sizes torch's threads by them, the launchers split them among SuperNodes.
"""

from __future__ import annotations

import os


def host_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity; all CPUs where there is none)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity, so count the CPUs
        return list(range(os.cpu_count() or 1))
