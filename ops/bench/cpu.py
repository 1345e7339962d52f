"""CPU time of the processes under test (user + system, from /proc on Linux), so that a
measurement can say where the machine's cores went: workers, broker, Redis, load generator.
Elsewhere the figures are absent, never wrong."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

PROC = Path("/proc")


def _ticks_per_s() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


TICKS_PER_S = _ticks_per_s()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces
    return text[text.rindex(")") + 2 :].split()


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads), or None if unknown."""
    # after the name: state(3) ppid(4) ... utime(14) stime(15), numbered from 1 as in proc(5)
    return _cpu_of(PROC / str(pid) / "stat")


def thread_cpu_s(pid: int, tid: int) -> float | None:
    """CPU seconds of one thread of ``pid`` (its main thread when ``tid == pid``)."""
    return _cpu_of(PROC / str(pid) / "task" / str(tid) / "stat")


def _cpu_of(path: Path) -> float | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    found = []
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds of a process and its live children (Celery's prefork pool)."""
    own = process_cpu_s(pid)
    if own is None:
        return None
    return own + sum(process_cpu_s(child) or 0.0 for child in children(pid))


def own_cpu_s() -> float:
    return time.process_time()


#: component name -> a function returning its CPU seconds so far (None if unknown)
Probes = Mapping[str, Callable[[], float | None]]


class CpuMeter:
    """Snapshots of several components; ``since(start)`` gives the CPU each one used."""

    def __init__(self, probes: Probes) -> None:
        self._probes = dict(probes)

    def snapshot(self) -> dict[str, float | None]:
        return {name: probe() for name, probe in self._probes.items()}

    @staticmethod
    def used(
        start: Mapping[str, float | None], end: Mapping[str, float | None]
    ) -> dict[str, float]:
        return {
            name: round(end_s - start_s, 3)
            for name, end_s in end.items()
            if end_s is not None and (start_s := start.get(name)) is not None
        }
