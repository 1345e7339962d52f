"""The benchmark's outputs, from its result (a JSON-ready dict): the JSON file itself, a
Markdown report (targets, throughput with ratios, latency under load, where the CPU went),
and a PNG plot of latency percentiles against offered load.

``python -m ops.bench.report bench-results/bench-....json`` renders the Markdown and the
plot again from a saved result.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ops.bench.stats import LOOP_THREADS, cpu_us_per_request

Result = Mapping[str, Any]


def write_json(result: Result, path: Path) -> None:
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _targets(result: Result) -> list[str]:
    rows = []
    for target in result.get("targets", []):
        met = target.get("met")
        verdict = "-" if met is None else ("yes" if met else "**no**")
        rows.append([target["name"], target["measured"], target["bound"], verdict])
    return _table(["target", "measured", "bound", "met"], rows)


def _throughput(result: Result) -> list[str]:
    settings = result["settings"]
    limit = result.get("limit") or {}
    pool = (result.get("pool") or {}).get("saturation") or {}
    celery = (result.get("celery") or {}).get("saturation") or {}
    echo = result.get("echo") or {}
    ratios = result.get("ratios", {})
    layout = f"{settings['workers']}x{settings['threads_per_worker']}"
    rows = [
        [f"limit: the model alone, batches of {settings['max_batch_size']}, {layout}",
         _num(limit.get("requests_per_s")) + _rounds(limit.get("rounds")), "1.00x (reference)",
         f"one full batch {_ms(limit.get('batch_ms_median'))} ms (median); CPU "
         f"{_num(limit.get('cpu_us_per_request'))} µs/request"],
        [f"pool end to end, closed loop, {pool.get('outstanding', '-')} outstanding",
         _num(pool.get("achieved_rps")) + _rounds(pool.get("rounds")),
         f"{_times(ratios.get('pool_over_limit'))} limit",
         f"mean batch {_num(pool.get('mean_batch_size'), 1)}; p50 "
         f"{_ms((pool.get('latency') or {}).get('p50_ms'))} ms; workers' CPU "
         f"{_num(cpu_us_per_request(pool, ['workers']))} µs/request"],
    ]
    if celery:
        peer = result["celery"]["layout"]
        rows.append([
            f"Celery, closed loop, {celery.get('outstanding', '-')} outstanding "
            f"({peer['processes']}x{peer['threads']}, prefetch {peer['prefetch']})",
            _num(celery.get("achieved_rps")) + _rounds(celery.get("rounds")),
            f"pool = {_times(ratios.get('pool_over_celery'))} Celery",
            f"{_times(ratios.get('celery_over_limit'))} limit; p50 "
            f"{_ms((celery.get('latency') or {}).get('p50_ms'))} ms",
        ])
    if echo:
        rows.append([
            f"echo, {echo['workers']} worker, {echo['requests']:,} pre-loaded requests",
            _num(echo.get("requests_per_s")), "pipeline ceiling",
            f"CPU per request: worker {_num(echo.get('worker_cpu_us_per_request'))} µs (its "
            f"event-loop thread {_num(echo.get('loop_thread_cpu_us_per_request'))} µs, busy "
            f"{_percent(echo.get('loop_thread_busy'))} of the drain), Redis "
            f"{_num(echo.get('redis_cpu_us_per_request'))} µs, broker "
            f"{_num(echo.get('broker_cpu_us_per_request'))} µs; mean batch "
            f"{_num(echo.get('mean_batch_size'), 1)}",
        ])
    return _table(["what", "requests/s", "ratio", "notes"], rows)


def _rounds(values: Sequence[float] | None) -> str:
    if not values or len(values) < 2:
        return ""
    return " (" + ", ".join(_num(value) for value in values) + ")"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _stages(result: Result) -> list[str]:
    """Where the pool's latency went at each rate: its own stamps, then the read."""
    points = [p for p in (result.get("pool") or {}).get("open", []) if p.get("stages")]
    saturation = (result.get("pool") or {}).get("saturation")
    if saturation and saturation.get("stages"):
        points = [*points, saturation]
    if not points:
        return []
    names = ["queue", "batch wait", "inference", "store + read"]
    rows = []
    for point in points:
        stages = point["stages"]
        label = (f"{point['offered_rps']:,.0f} req/s" if point.get("offered_rps")
                 else "saturation")
        rows.append([label] + [
            f"{_ms(stages[name]['mean_ms'])} / {_ms(stages[name]['p99_ms'])}"
            if name in stages else "-" for name in names])
    return ["", "Where the pool's latency goes (mean / p99 ms, from the results' own timings: "
            "queue = submitted -> fetched by a worker, batch wait = fetched -> its batch "
            "started, inference = the batch's model time, store + read = the worker's "
            "stamp -> the result read by the load generator):", "",
            *_table(["load", *names], rows)]


def _latency_rows(system: str, points: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for point in points:
        latency = point.get("latency") or {}
        stamped = point.get("stamped") or {}
        fraction = point.get("fraction")
        rows.append([
            system,
            _num(point.get("offered_rps")),
            "-" if fraction is None else f"{fraction:.0%}",
            _num(point.get("achieved_rps")),
            _ms(latency.get("p50_ms")), _ms(latency.get("p95_ms")), _ms(latency.get("p99_ms")),
            _ms(stamped.get("p99_ms")),
            _num(point.get("mean_batch_size"), 1),
            str(point.get("lost", 0)) + (f" ({point['note']})" if point.get("note") else ""),
        ])
    return rows


def _latency(result: Result) -> list[str]:
    rows = _latency_rows("pool", (result.get("pool") or {}).get("open", []))
    rows += _latency_rows("Celery", (result.get("celery") or {}).get("open", []))
    return _table(["system", "offered req/s", "of pool saturation", "answered req/s",
                   "p50 ms", "p95 ms", "p99 ms", "p99 ms (pool's stamp)", "mean batch",
                   "lost"], rows)


def _cpu(result: Result) -> list[str]:
    rows = []
    for label, point in _all_points(result):
        cpu = {name: used for name, used in (point.get("cpu_s") or {}).items() if used > 0.005}
        seconds = point.get("cpu_wall_s") or 0
        if not cpu or not seconds:
            continue
        share = ", ".join(f"{name} {used / seconds:.2f}" for name, used in cpu.items())
        per_request = ", ".join(f"{name} {_num(cpu_us_per_request(point, [name]))}"
                                for name in cpu)
        total = sum(used for name, used in cpu.items() if name != LOOP_THREADS)
        rows.append([label, share, f"{total / seconds:.2f}", per_request])
    if not rows:
        return []
    return ["", "Where the cores went during each measurement (warm-up and drain included; "
            "a frozen or idle process shows nothing): cores busy (CPU s / wall s) and CPU µs "
            "per answered request:", "",
            *_table(["measurement", "cores, per component", "cores, total",
                     "µs per request, per component"], rows)]


def _cpu_view(result: Result) -> list[str]:
    """CPU per request at saturation, and the ratios it implies: robust to machine noise."""
    cpu = result.get("cpu_per_request_us") or {}
    if not any(cpu.values()):
        return []
    ratios = result.get("ratios", {})
    idle = (result.get("pool") or {}).get("idle_cores") or {}
    idle_line = ("The loaded pool, idle (its workers polling the broker), keeps busy: "
                 + ", ".join(f"{name} {cores:.2f}" for name, cores in idle.items())
                 + " cores.") if idle else ""
    return ["", *([idle_line, ""] if idle_line else []),
            "CPU time per request at saturation (all threads of each process; robust to "
            "how much of the machine a measurement got, which throughput is not). Requests "
            f"per CPU-second: pool = {_times(ratios.get('pool_over_limit_by_cpu'))} limit, "
            f"pool = {_times(ratios.get('pool_over_celery_by_cpu'))} Celery.", "",
            *_table(["where", "CPU µs per request"],
                    [[name, _num(value)] for name, value in cpu.items() if value is not None])]


def _all_points(result: Result) -> list[tuple[str, Mapping[str, Any]]]:
    points: list[tuple[str, Mapping[str, Any]]] = []
    for system in ("pool", "celery"):
        block = result.get(system) or {}
        if block.get("saturation"):
            points.append((f"{system} saturation", block["saturation"]))
        for point in block.get("open", []):
            if point.get("offered_rps"):
                points.append((f"{system} at {point['offered_rps']:,.0f} req/s", point))
    return points


def describe_plot(result: Result) -> str:
    """The plot in words: how each system's latency percentiles move with offered load."""
    parts = []
    for system, label in (("pool", "The pool"), ("celery", "Celery")):
        points = [p for p in (result.get(system) or {}).get("open", []) if p.get("latency")]
        if not points:
            continue
        parts.append(f"{label}: p50/p99 " + ", ".join(
            f"{_ms(p['latency']['p50_ms'])}/{_ms(p['latency']['p99_ms'])} ms at "
            f"{p['offered_rps']:,.0f} req/s" for p in points))
    pinned = [p for p in ((result.get("pinned") or {}).get("pool") or {}).get("open", [])
              if p.get("latency")]
    if pinned:
        parts.append("The pool pinned (dash-dot): p50/p99 " + ", ".join(
            f"{_ms(p['latency']['p50_ms'])}/{_ms(p['latency']['p99_ms'])} ms at "
            f"{p['offered_rps']:,.0f} req/s" for p in pinned))
    saturation = {s: ((result.get(s) or {}).get("saturation") or {}).get("achieved_rps")
                  for s in ("pool", "celery")}
    marks = ", ".join(f"{name} {_num(rate)} req/s" for name, rate in saturation.items() if rate)
    text = "Latency (log scale) against offered load (Poisson arrivals). " + "; ".join(parts)
    text += f". Dotted lines: saturation throughput ({marks})." if marks else "."
    bound = result.get("latency_bound_ms")
    if bound:
        text += f" Dashed line: the p99 bound at 50 % of saturation ({_ms(bound)} ms)."
    return text


def render_markdown(result: Result) -> str:
    settings = result["settings"]
    machine = result["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in result["versions"].items())
    peer = (result.get("celery") or {}).get("layout")
    lines = [
        f"# inferpool bench: {settings['model']} {settings['precision']}, "
        f"{machine['cores']} cores",
        "",
        f"`{result['command']}` — {result['started_at']}, {result['wall_s']:.0f} s in all, "
        "everything in one invocation on one machine (broker, Redis, load generator, workers).",
        "",
        f"- machine: {machine['cores']} cores, {machine['cpu']}, {machine['platform']}",
        f"- pool: {settings['workers']} worker(s) x {settings['threads_per_worker']} torch "
        f"thread(s), max_batch_size {settings['max_batch_size']}, max_wait_ms "
        f"{settings['max_wait_ms']:g}, {settings['partitions']} partitions; the limit runs in "
        "the same processes x threads layout",
    ]
    served = {"limit": (result.get("limit") or {}).get("precision"),
              "pool": (result.get("pool") or {}).get("precision"),
              "Celery": (peer or {}).get("precision")}
    served = {name: mode for name, mode in served.items() if mode}
    if served:
        same = len(set(served.values())) == 1
        lines.append("- precision served: " + ", ".join(f"{n} {m}" for n, m in served.items())
                     + ("" if same else " — **not the same mode: the ratios compare unlike "
                        "models** (the accuracy guard fell back somewhere)"))
    if peer:
        lines.append(
            f"- Celery {peer['processes']} prefork process(es) x {peer['threads']} torch "
            f"thread(s) ({peer['why']}), prefetch {peer['prefetch']}, acks_late, JSON, one "
            "text per task, its own redis-server as broker and result backend")
    lines += [
        f"- measurement: {settings.get('rounds', 1)} round(s) of limit "
        f"({settings.get('limit_s', 0):g} s), pool and Celery at saturation, back to back "
        "(closed loops of "
        f"{settings['measure_s']:g} s after {settings['warmup_s']:g} s of warm-up); then open "
        f"loops of {settings['open_s']:g} s of Poisson arrivals, the first "
        f"{settings['warmup_s']:g} s not counted; figures in parentheses are the rounds",
        "- latency: from when a request was due to when its result was readable in Redis, "
        "as the load generator saw it; the pool's own stamp (timings.end_to_end_ms: submit "
        "to result written) is shown beside it",
        f"- versions: {versions}",
        "", "## Targets", "", *_targets(result),
        "", "## Throughput at saturation", "", *_throughput(result), *_cpu_view(result),
        "", "## Latency under load (open loop)", "", *_latency(result), *_stages(result),
        *_cpu(result),
        "", "## Plot", "", f"![latency against offered load]({result.get('plot', '')})", "",
        describe_plot(result),
    ]
    lines += _capacity(result)
    pinned = result.get("pinned")
    if pinned:
        lines += ["", "## Both topologies side by side", "",
                  f"- shared: {(result.get('topology') or {}).get('description', '-')}",
                  f"- pinned: {(pinned.get('topology') or {}).get('description', '-')} "
                  f"({pinned['settings']['workers']} worker x "
                  f"{pinned['settings']['threads_per_worker']} thread; limit in the same "
                  f"layout, on the workers' core); {pinned.get('wall_s', 0):.0f} s", "",
                  *_side_by_side(result, pinned),
                  "", "## Pinned topology: targets", "", *_targets(pinned),
                  "", "## Pinned topology: throughput", "", *_throughput(pinned),
                  *_cpu_view(pinned),
                  "", "## Pinned topology: latency under load", "", *_latency(pinned),
                  *_stages(pinned), *_capacity(pinned)]
    echo = result.get("echo") or {}
    if echo.get("profile"):
        total = echo.get("profile_total_s") or 0
        lines += ["", "## What bounds the echo worker", "",
                  f"cProfile of the worker's event-loop thread on its own CPU clock while it "
                  f"drained {echo.get('profile_requests', 0):,} requests (start-up included): "
                  f"{total:.2f} CPU s in all. Top by own time:", "",
                  *_profile_table(echo["profile"]),
                  "", "The project's own functions by cumulative time (the worker's stages):",
                  "", *_profile_table(echo.get("profile_stages") or [])]
    failures = result.get("failures")
    if failures:
        lines += ["", "## Failures", "", *(f"- {name}: {text}" for name, text in
                                           failures.items())]
    return "\n".join(lines) + "\n"


def _capacity(result: Result) -> list[str]:
    found = (result.get("pool") or {}).get("capacity")
    if not found:
        return []
    rows = [[f"{p['fraction']:.2f}", _num(p.get("offered_rps")), _num(p.get("achieved_rps")),
             _ms(p.get("early_p90_ms")), _ms(p.get("late_p90_ms")), _ms(p.get("p99_ms")),
             _num(p.get("mean_batch_size"), 1), "yes" if p["stable"] else "no"]
            for p in found.get("probes", [])]
    name = (result.get("topology") or {}).get("name", "shared")
    return ["", f"Open-loop capacity search ({name}): {_num(found.get('capacity_rps'))} req/s "
            f"= {_times(found.get('capacity_over_saturation'))} the closed-loop saturation "
            f"({_num(found.get('saturation_rps'))} req/s). Stable: {found.get('rule')}.", "",
            *_table(["fraction", "offered", "answered", "early p90 ms", "late p90 ms",
                     "p99 ms", "mean batch", "stable"], rows)]


def _at(result: Result, fraction: float) -> Mapping[str, Any]:
    points = [p for p in (result.get("pool") or {}).get("open", [])
              if abs((p.get("fraction") or 9) - fraction) <= 0.05]
    return points[0] if points else {}


def _side_by_side(shared: Result, pinned: Result) -> list[str]:
    rows = []
    for label, result in (("shared", shared), ("pinned", pinned)):
        ratios = result.get("ratios") or {}
        pool = (result.get("pool") or {}).get("saturation") or {}
        found = (result.get("pool") or {}).get("capacity") or {}
        rows.append([
            f"{label} ({result['settings']['workers']}x"
            f"{result['settings']['threads_per_worker']})",
            _num((result.get("limit") or {}).get("requests_per_s")),
            _num(pool.get("achieved_rps")),
            _times(ratios.get("pool_over_limit")), _times(ratios.get("pool_over_limit_by_cpu")),
            _percent(result.get("worker_own_cost")),
            _times(found.get("capacity_over_saturation")),
            *(_ms((_at(result, f).get("latency") or {}).get("p99_ms")) for f in (0.1, 0.5, 0.8)),
            _ms(result.get("latency_bound_ms")),
            *(_num(_at(result, f).get("mean_batch_size"), 1) for f in (0.5, 0.8)),
        ])
    return _table(["topology", "limit req/s", "pool req/s", "pool/limit", "by CPU",
                   "workers' own cost", "capacity/saturation", "p99 @10 %", "p99 @50 %",
                   "p99 @80 %", "p99 bound", "batch @50 %", "batch @80 %"], rows)


def _profile_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return _table(["function", "own s", "cumulative s", "calls"],
                  [[f"`{row['function']}`", f"{row['tottime_s']:.3f}",
                    f"{row['cumtime_s']:.3f}", f"{row['calls']:,}"] for row in rows])


def plot_latency(result: Result, path: Path) -> None:
    """Latency percentiles (log scale) against offered load, pool and Celery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    colors = {"p50_ms": "tab:blue", "p95_ms": "tab:orange", "p99_ms": "tab:red"}
    curves = [("pool", result.get("pool") or {}, "-", "o"),
              ("celery", result.get("celery") or {}, "--", "s")]
    if result.get("pinned"):
        curves.append(("pool pinned", result["pinned"].get("pool") or {}, "-.", "^"))
    for system, block, style, marker in curves:
        points = [p for p in block.get("open", []) if p.get("latency")]
        if points:
            offered = [p["offered_rps"] for p in points]
            for key, color in colors.items():
                axes.plot(offered, [p["latency"][key] for p in points], style, marker=marker,
                          color=color, label=f"{system} {key.removesuffix('_ms')}")
        rate = (block.get("saturation") or {}).get("achieved_rps")
        if rate:
            axes.axvline(rate, linestyle=":", color="gray")
            axes.annotate(f"{system} saturation", (rate, 1), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", ha="right", fontsize=8, color="gray")
    bound = result.get("latency_bound_ms")
    if bound:
        axes.axhline(bound, linestyle="--", color="black", linewidth=0.8)
        axes.annotate("p99 bound at 50 %", (0, bound), xycoords=("axes fraction", "data"),
                      va="bottom", fontsize=8)
    settings = result["settings"]
    axes.set_yscale("log")
    axes.set_xlabel("offered load, requests/s (Poisson arrivals)")
    axes.set_ylabel("end-to-end latency, ms")
    axes.set_title(f"{settings['model']} {settings['precision']}, {result['machine']['cores']} "
                   f"cores: pool ({settings['workers']}x{settings['threads_per_worker']}) "
                   "vs Celery" + (", and the pool pinned (1x1)" if result.get("pinned") else ""))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_all(result: dict[str, Any], stem: Path) -> dict[str, Path]:
    """``stem``.json, .md and .png; the Markdown links the plot by its file name."""
    paths = {kind: stem.with_suffix(f".{kind}") for kind in ("json", "md", "png")}
    result["plot"] = paths["png"].name
    try:
        plot_latency(result, paths["png"])
    except ImportError as error:  # matplotlib is in the bench extra
        result["plot"] = f"(no plot: {error})"
        del paths["png"]
    write_json(result, paths["json"])
    paths["md"].write_text(render_markdown(result), encoding="utf-8")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("result", type=Path, help="a bench-....json written by ops/bench/run.py")
    args = parser.parse_args()
    result = json.loads(args.result.read_text(encoding="utf-8"))
    for kind, path in write_all(result, args.result.with_suffix("")).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
