"""The arithmetic of the benchmark: percentiles, latency summaries, batch sizes, and what
one measured load point holds. Pure: no services, no clocks."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: A CPU component that is a part of another ("workers"): shown, never added to a total.
LOOP_THREADS = "workers' event-loop threads"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linearly interpolated
    between the two nearest ranks (numpy's default, 'linear')."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0-100, got {q}")
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles of one load point, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @classmethod
    def of(cls, values_ms: Iterable[float]) -> LatencySummary | None:
        """The summary of these latencies; None when there are none."""
        ordered = sorted(values_ms)
        if not ordered:
            return None
        return cls(
            count=len(ordered),
            p50_ms=percentile(ordered, 50),
            p95_ms=percentile(ordered, 95),
            p99_ms=percentile(ordered, 99),
            mean_ms=sum(ordered) / len(ordered),
            max_ms=ordered[-1],
        )


def mean_batch_size(sizes_per_request: Iterable[int]) -> float | None:
    """The mean size of the batches these requests ran in, per batch (not per request).

    Each request knows the size ``b`` of its batch; a batch of ``b`` is seen ``b`` times,
    so it counts ``1/b`` per request: batches = sum(1/b), mean = requests / batches.
    """
    sizes = [size for size in sizes_per_request if size > 0]
    if not sizes:
        return None
    return len(sizes) / sum(1 / size for size in sizes)


@dataclass(frozen=True, slots=True)
class Completion:
    """One request as the load generator saw it. Times are ``time.perf_counter()`` seconds.

    ``sent_at`` is when the request was due (its scheduled arrival in an open loop), so a late
    load generator shows up as latency instead of hiding it. ``stamped_ms`` is the system's own
    end-to-end figure, when it stamps one (the pool's ``timings.end_to_end_ms``).
    """

    sent_at: float
    seen_at: float
    ok: bool = True
    stamped_ms: float | None = None
    batch_size: int | None = None
    stages_ms: dict[str, float] | None = None  # where the system says the time went

    @property
    def latency_ms(self) -> float:
        return (self.seen_at - self.sent_at) * 1000


@dataclass(slots=True)
class LoadPoint:
    """One measurement: a system under a closed loop (saturation) or an open loop (a rate)."""

    system: str  # "pool" | "celery"
    mode: str  # "closed" | "open"
    duration_s: float
    requests: int  # answered within the measurement
    achieved_rps: float
    offered_rps: float | None = None  # open loop: the Poisson rate
    fraction: float | None = None  # open loop: offered / the pool's saturation rate
    outstanding: int | None = None  # closed loop: requests kept in flight
    errors: int = 0  # answered, but not ok
    lost: int = 0  # sent but never answered before the wait ended
    latency: LatencySummary | None = None  # client: due -> result readable
    stamped: LatencySummary | None = None  # the system's own end-to-end stamp
    mean_batch_size: float | None = None
    max_lag_ms: float | None = None  # open loop: how late the generator sent at worst
    early_p90_ms: float | None = None  # open loop: p90 of the first third sent (in window)
    late_p90_ms: float | None = None  # open loop: p90 of the last third: a growing queue
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per component
    cpu_wall_s: float | None = None  # the wall time those CPU seconds were taken over
    answered_total: int | None = None  # answers read over that wall time (warm-up included)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> mean, p99
    note: str = ""


def summarize(
    completions: Sequence[Completion], *, system: str, mode: str, duration_s: float,
    lost: int = 0,
) -> LoadPoint:
    """A LoadPoint from the completions that fall in the measurement (chosen by the caller)."""
    answered = [c for c in completions if c.ok]
    stamped = [c.stamped_ms for c in answered if c.stamped_ms is not None]
    sizes = [c.batch_size for c in answered if c.batch_size is not None]
    point = LoadPoint(
        system=system,
        mode=mode,
        duration_s=duration_s,
        requests=len(completions),
        achieved_rps=len(completions) / duration_s if duration_s > 0 else 0.0,
        errors=len(completions) - len(answered),
        lost=lost,
        latency=LatencySummary.of(c.latency_ms for c in answered),
        stamped=LatencySummary.of(stamped),
        mean_batch_size=mean_batch_size(sizes),
    )
    point.stages = stage_summary(answered)
    return point


def stage_summary(completions: Sequence[Completion]) -> dict[str, dict[str, float]]:
    """Mean and p99 of each stage the system reports, and of what it cannot see: from its
    end-to-end stamp to the load generator reading the result ("store + read")."""
    stages: dict[str, list[float]] = {}
    for completion in completions:
        for name, ms in (completion.stages_ms or {}).items():
            stages.setdefault(name, []).append(ms)
        if completion.stamped_ms is not None:
            stages.setdefault("store + read", []).append(
                completion.latency_ms - completion.stamped_ms)
    summary = {}
    for name, values in stages.items():
        ordered = sorted(values)
        summary[name] = {"mean_ms": round(sum(ordered) / len(ordered), 2),
                         "p99_ms": round(percentile(ordered, 99), 2)}
    return summary


def cpu_us_per_request(point: Mapping[str, Any], components: Iterable[str]) -> float | None:
    """CPU µs per answered request of these components over a whole measurement (its warm-up
    and drain included, as the answers counted): robust to how much of the machine the
    measurement got, which the throughput is not."""
    cpu = point.get("cpu_s") or {}
    answered = point.get("answered_total")
    names = [name for name in components if name in cpu]
    if not names or not answered:
        return None
    return sum(float(cpu[name]) for name in names) / answered * 1e6


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
