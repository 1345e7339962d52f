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
WORKER_OWN_COST = 0.10
CAPACITY_OVER_SATURATION = 0.95
LATENCY_FRACTIONS = (0.1, 0.5, 0.8)


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


def worker_own_cost(result: dict[str, Any]) -> float | None:
    """(workers' CPU per request at saturation - the model's alone) / the model's."""
    model = (result.get("limit") or {}).get("cpu_us_per_request")
    pool = (result.get("pool") or {}).get("saturation") or {}
    workers = cpu_us_per_request(pool, ["workers"]) if pool else None
    if not model or workers is None:
        return None
    return float((workers - model) / model)


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

    targets.append({
        "name": f"pool saturation >= {POOL_OVER_LIMIT} x limit by CPU per request",
        "measured": _fmt(by_cpu, "{:.2f}x"),
        "bound": f"{POOL_OVER_LIMIT:.2f}x",
        "met": None if by_cpu is None else by_cpu >= POOL_OVER_LIMIT})
    own = result["worker_own_cost"] = worker_own_cost(result)
    targets.append({
        "name": f"the workers' own cost <= {WORKER_OWN_COST:.0%} of the model's (workers' CPU "
                "per request at saturation - the limit's, over the limit's)",
        "measured": _fmt(own, "{:.0%}"),
        "bound": f"{WORKER_OWN_COST:.0%}",
        "met": None if own is None else own <= WORKER_OWN_COST})

    pool = result.get("pool") or {}
    bound = result["latency_bound_ms"] = latency_bound_ms(result)
    batch_ms = (result.get("limit") or {}).get("batch_ms_median")
    for wanted in LATENCY_FRACTIONS:
        near = min(pool.get("open", []), key=lambda p: abs((p.get("fraction") or 9) - wanted),
                   default=None)
        fraction = (near or {}).get("fraction")
        if fraction is None or abs(fraction - wanted) > 0.05:
            continue  # not run at that load
        p99 = ((near or {}).get("latency") or {}).get("p99_ms")
        stamped = ((near or {}).get("stamped") or {}).get("p99_ms")
        targets.append({
            "name": f"p99 end to end at {wanted:.0%} of saturation <= max_wait_ms + 2 x full "
                    "batch + 10 ms",
            "measured": _fmt(p99, "{:.1f} ms")
            + f" (pool's own stamp {_fmt(stamped, '{:.1f} ms')})",
            "bound": _fmt(bound, "{:.1f} ms") + (
                f" = {result['settings']['max_wait_ms']:g} + 2 x {batch_ms:.1f} + 10"
                if batch_ms else ""),
            "met": None if p99 is None or bound is None else p99 <= bound})

    found = pool.get("capacity") or {}
    if found:
        share = found.get("capacity_over_saturation")
        targets.append({
            "name": f"open-loop capacity >= {CAPACITY_OVER_SATURATION} x closed-loop saturation",
            "measured": _fmt(found.get("capacity_rps"), "{:,.0f} req/s") + " = "
            + _fmt(share, "{:.2f}x") + " (probes: " + ", ".join(
                f"{p['fraction']:.2f} {'stable' if p['stable'] else 'not stable'}"
                for p in found.get("probes", [])) + ")",
            "bound": f"{CAPACITY_OVER_SATURATION:.2f}x",
            "met": None if share is None else share >= CAPACITY_OVER_SATURATION})

    if (result.get("topology") or {}).get("name") == "pinned":  # no Celery, no echo here
        result["targets"] = targets
        return
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
