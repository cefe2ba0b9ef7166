"""The host's cores divided among the SuperNodes one launcher starts on it.

Each SuperNode's ClientApp would otherwise use every core, and N of them on one
host oversubscribe it (docs/DEPLOY.md has the rounds measured before and after the
split on 2 cores: 165 s, then 146-161 s, close to that machine's compute limit).
SuperNode ``i`` gets a disjoint set of the launcher's CPUs (its affinity, inherited
by the ClientApp processes it starts) and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
of that size, which is what ``train.num-threads = 0`` then uses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from fedpeft.host import host_cpus

log = logging.getLogger(__name__)

__all__ = ["THREAD_VARS", "format_cpus", "host_cpus", "pin", "split_cpus", "thread_env"]

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def split_cpus(cpus: Sequence[int], n: int) -> list[frozenset[int]]:
    """``cpus`` in ``n`` sets for ``n`` SuperNodes: contiguous, sizes differing by at most one.

    Disjoint while there are at least as many CPUs as SuperNodes (the first sets get
    the extra CPUs); with more SuperNodes than CPUs each gets one CPU, round-robin.

    Raises
    ------
    ValueError
        If ``n`` < 1 or ``cpus`` is empty.

    """
    cpus = sorted(set(cpus))
    if n < 1:
        raise ValueError(f"n={n}: need at least one SuperNode to give CPUs to")
    if not cpus:
        raise ValueError("cpus=[]: no CPUs to split")
    if n >= len(cpus):
        return [frozenset({cpus[i % len(cpus)]}) for i in range(n)]
    size, extra = divmod(len(cpus), n)
    sets, start = [], 0
    for i in range(n):
        end = start + size + (i < extra)
        sets.append(frozenset(cpus[start:end]))
        start = end
    return sets


def thread_env(cpus: Iterable[int]) -> dict[str, str]:
    """``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` for a process on ``cpus``."""
    count = str(len(set(cpus)))
    return dict.fromkeys(THREAD_VARS, count)


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Set the CPU affinity of every thread of process ``pid`` to ``cpus``.

    Children started afterwards (a SuperNode's ClientApps) inherit it. Called right
    after ``Popen``, before the new program has started threads of its own; every
    thread listed in ``/proc/<pid>/task`` is set anyway. A no-op without
    ``os.sched_setaffinity`` (not Linux), where only the thread counts apply; a
    refusal by the kernel is logged, and the process runs unpinned.
    """
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = set(cpus)
    try:
        tids = [int(t) for t in os.listdir(Path("/proc") / str(pid) / "task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # the thread (or the process) has already exited
            log.debug("pid %d / thread %d gone before pinning", pid, tid)
        except OSError as exc:  # e.g. a cpuset changed under us: run unpinned, say so
            log.warning("pid %d: could not pin to CPUs %s: %s", pid, format_cpus(cpus), exc)
            return


def format_cpus(cpus: Iterable[int]) -> str:
    """``{0, 1, 2, 5}`` → ``0-2,5`` (as ``taskset -c`` writes a CPU list)."""
    ordered = sorted(set(cpus))
    ranges: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(ranges)
