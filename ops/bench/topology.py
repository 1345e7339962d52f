"""Where the benchmark's processes run: ``shared`` (everything on every core, as on a laptop)
or ``pinned`` (the broker, Redis and the load generator on one core, the workers and the
limit on another: where a deployment puts them, on other machines than the workers).

Pinning sets the affinity of every thread of a process (``/proc/<pid>/task``); threads it
starts later inherit it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str
    services: frozenset[int] | None = None  # broker, Redis, load generator
    workers: frozenset[int] | None = None  # pool workers and the limit

    @property
    def pinned(self) -> bool:
        return self.services is not None

    def describe(self) -> str:
        if not self.pinned:
            return "shared: broker, Redis, load generator and workers on every core"
        return (f"pinned: broker, Redis and load generator on core(s) {_cores(self.services)}, "
                f"workers and the limit on core(s) {_cores(self.workers)}")


SHARED = Topology("shared")


def pinned() -> Topology:
    """The services on the first core this process may use, the workers on the second."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError(f"the pinned topology needs 2 cores, this process has {cores}")
    return Topology("pinned", frozenset(cores[:1]), frozenset(cores[1:2]))


def pin(pids: Iterable[int], cores: frozenset[int] | None) -> None:
    """Every thread of each process to ``cores`` (None: every core of this machine)."""
    target = cores or frozenset(range(os.cpu_count() or 1))
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(ProcessLookupError, OSError):
                    os.sched_setaffinity(int(tid), target)


def affinity(pid: int) -> list[int]:
    """The cores the process's main thread may run on (for the report)."""
    try:
        return sorted(os.sched_getaffinity(pid))
    except (ProcessLookupError, OSError):
        return []


def _cores(cores: frozenset[int] | None) -> str:
    return ",".join(str(core) for core in sorted(cores or ()))
