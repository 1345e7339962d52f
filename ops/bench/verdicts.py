"""The ratios the benchmark is read by, and the issue's targets, checked against them."""

from __future__ import annotations

import statistics
from typing import Any

from ops.bench.stats import LOOP_THREADS, cpu_us_per_request, ratio

#: The processes whose CPU a request costs, in each system (all on the one machine).
POOL_COMPONENTS = ("workers", "broker", "redis", "load generator")
CELERY_COMPONENTS = ("celery", "celery redis", "load generator")

ECHO_TARGET_RPS = 20_000
POOL_OVER_LIMIT = 0.9
POOL_OVER_CELERY = 2.5


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _per_round(numerators: list[float], denominators: list[float]) -> list[float]:
    return [n / d for n, d in zip(numerators, denominators, strict=False) if d]


def add_ratios(result: dict[str, Any]) -> None:
    """pool / limit, pool / Celery, Celery / limit: from the means over the rounds, with each
    round's own ratio beside them (the systems of one round ran back to back)."""
    limit = result.get("limit") or {}
    pool = (result.get("pool") or {}).get("saturation") or {}
    celery = (result.get("celery") or {}).get("saturation") or {}
    rounds = {"limit": limit.get("rounds") or [], "pool": pool.get("rounds") or [],
              "celery": celery.get("rounds") or []}
    limit_cpu = limit.get("cpu_us_per_request")
    pool_cpu = cpu_us_per_request(pool, POOL_COMPONENTS) if pool else None
    celery_cpu = cpu_us_per_request(celery, CELERY_COMPONENTS) if celery else None
    result["cpu_per_request_us"] = {
        "limit (model alone)": limit_cpu,
        "pool, all its processes": pool_cpu,
        **{f"pool: {name}": cpu_us_per_request(pool, [name]) if pool else None
           for name in (*POOL_COMPONENTS[:1], LOOP_THREADS, *POOL_COMPONENTS[1:])},
        "celery, all its processes": celery_cpu,
        **{f"celery: {name}": cpu_us_per_request(celery, [name]) if celery else None
           for name in CELERY_COMPONENTS},
    }
    result["ratios"] = {
        # requests per CPU-second, relative: what the throughput ratios would be if every
        # system had the machine's cores to itself (robust to a noisy machine)
        "pool_over_limit_by_cpu": ratio(limit_cpu, pool_cpu),
        "pool_over_celery_by_cpu": ratio(celery_cpu, pool_cpu),
        "pool_over_limit": ratio(pool.get("achieved_rps"), limit.get("requests_per_s")),
        "pool_over_celery": ratio(pool.get("achieved_rps"), celery.get("achieved_rps")),
        "celery_over_limit": ratio(celery.get("achieved_rps"), limit.get("requests_per_s")),
        "pool_over_limit_by_round": _per_round(rounds["pool"], rounds["limit"]),
        "pool_over_celery_by_round": _per_round(rounds["pool"], rounds["celery"]),
    }


def latency_bound_ms(result: dict[str, Any]) -> float | None:
    """max_wait_ms + 2 x (one full batch, from the limit) + 10 ms."""
    batch_ms = (result.get("limit") or {}).get("batch_ms_median")
    if batch_ms is None:
        return None
    bound: float = result["settings"]["max_wait_ms"] + 2 * batch_ms + 10
    return bound


def add_targets(result: dict[str, Any]) -> None:
    ratios = result["ratios"]
    targets = []
    over_limit = ratios["pool_over_limit"]
    by_round = ", ".join(f"{r:.2f}" for r in ratios["pool_over_limit_by_round"])
    by_cpu = ratios["pool_over_limit_by_cpu"]
    targets.append({
        "name": f"pool saturation >= {POOL_OVER_LIMIT} x limit",
        "measured": _fmt(over_limit, "{:.2f}x") + (f" (rounds: {by_round})" if by_round else "")
        + f"; by CPU per request {_fmt(by_cpu, '{:.2f}x')}",
        "bound": f"{POOL_OVER_LIMIT:.2f}x",
        "met": None if over_limit is None else over_limit >= POOL_OVER_LIMIT})

    pool = result.get("pool") or {}
    half = min(pool.get("open", []), key=lambda p: abs((p.get("fraction") or 9) - 0.5),
               default=None)
    fraction = (half or {}).get("fraction")
    p99 = ((half or {}).get("latency") or {}).get("p99_ms")
    stamped = ((half or {}).get("stamped") or {}).get("p99_ms")
    bound = result["latency_bound_ms"] = latency_bound_ms(result)
    batch_ms = (result.get("limit") or {}).get("batch_ms_median")
    targets.append({
        "name": "p99 end to end at 50 % of saturation <= max_wait_ms + 2 x full batch + 10 ms"
                + ("" if fraction in (None, 0.5) else f" (nearest rate run: {fraction:.0%})"),
        "measured": _fmt(p99, "{:.1f} ms") + f" (pool's own stamp {_fmt(stamped, '{:.1f} ms')})",
        "bound": _fmt(bound, "{:.1f} ms") + (
            f" = {result['settings']['max_wait_ms']:g} + 2 x {batch_ms:.1f} + 10"
            if batch_ms else ""),
        "met": None if p99 is None or bound is None else p99 <= bound})

    over_celery = ratios["pool_over_celery"]
    by_round = ", ".join(f"{r:.2f}" for r in ratios["pool_over_celery_by_round"])
    targets.append({
        "name": f"pool saturation >= {POOL_OVER_CELERY} x Celery",
        "measured": _fmt(over_celery, "{:.2f}x") + (f" (rounds: {by_round})" if by_round
                                                    else "")
        + f"; by CPU per request {_fmt(ratios['pool_over_celery_by_cpu'], '{:.2f}x')}",
        "bound": f"{POOL_OVER_CELERY:.2f}x",
        "met": None if over_celery is None else over_celery >= POOL_OVER_CELERY})

    echo = result.get("echo") or {}
    echo_rps = echo.get("requests_per_s")
    targets.append({
        "name": f"echo >= {ECHO_TARGET_RPS:,} requests/s through one worker (or a profile "
                "that shows what bounds it)",
        "measured": _fmt(echo_rps, "{:,.0f}/s") + (" (profile below)" if echo.get("profile")
                                                   else ""),
        "bound": f"{ECHO_TARGET_RPS:,}/s",
        "met": None if echo_rps is None else echo_rps >= ECHO_TARGET_RPS})
    result["targets"] = targets


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None
