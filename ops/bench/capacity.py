"""Open-loop capacity: the highest Poisson rate the pool answers with a stable queue, found
by a short bisection between half and 110 % of its closed-loop saturation (the first probe
at 95 %, the issue's goal).

A rate is *stable* when nothing is lost, the answered rate keeps up with the offered one
(>= 97 %), and the queue does not grow over the run: the p90 latency of the requests sent
in its last third is at most twice that of its first third, plus 100 ms.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ops.bench.stats import LoadPoint

KEEPS_UP = 0.97
GROWTH_FACTOR, GROWTH_SLACK_MS = 2.0, 100.0
LOW, HIGH, FIRST = 0.5, 1.1, 0.95


def stable(point: LoadPoint) -> bool:
    offered = point.offered_rps or 0.0
    if point.lost or offered <= 0 or point.achieved_rps < KEEPS_UP * offered:
        return False
    early, late = point.early_p90_ms, point.late_p90_ms
    return early is not None and late is not None and (
        late <= GROWTH_FACTOR * early + GROWTH_SLACK_MS)


async def search(measure: Callable[[float], Awaitable[LoadPoint]], saturation_rps: float,
                 depth: int) -> dict[str, Any]:
    """Bisect on the fraction of ``saturation_rps``; ``measure(rate)`` runs one open loop.
    Returns the highest stable rate probed (0 when none was), and every probe."""
    low, high, fraction = LOW, HIGH, FIRST
    probes: list[dict[str, Any]] = []
    best = 0.0
    for _ in range(depth):
        point = await measure(fraction * saturation_rps)
        ok = stable(point)
        probes.append({"fraction": fraction, "offered_rps": point.offered_rps,
                       "achieved_rps": point.achieved_rps, "stable": ok,
                       "early_p90_ms": point.early_p90_ms, "late_p90_ms": point.late_p90_ms,
                       "p99_ms": point.latency.p99_ms if point.latency else None,
                       "mean_batch_size": point.mean_batch_size, "lost": point.lost})
        if ok:
            best = max(best, fraction)
            low = fraction
        else:
            high = fraction
        fraction = (low + high) / 2
    return {"capacity_rps": best * saturation_rps, "capacity_over_saturation": best,
            "saturation_rps": saturation_rps, "probes": probes,
            "rule": f"lost 0, answered >= {KEEPS_UP:.0%} of offered, late-third p90 <= "
                    f"{GROWTH_FACTOR:g} x early-third p90 + {GROWTH_SLACK_MS:g} ms"}
