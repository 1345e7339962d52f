"""The benchmark's pure parts: percentiles, the Poisson schedule, batch-size means, and the
Markdown report. No services; the harness itself is run with ``python -m ops.bench.run``."""

from __future__ import annotations

import itertools
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # ops/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from ops.bench import capacity  # noqa: E402
from ops.bench.loads import TextCycle, poisson_arrivals  # noqa: E402
from ops.bench.report import describe_plot, render_markdown  # noqa: E402
from ops.bench.stats import (  # noqa: E402
    Completion,
    LatencySummary,
    LoadPoint,
    cpu_us_per_request,
    mean_batch_size,
    percentile,
    summarize,
)


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0) == 1
    assert percentile(values, 100) == 100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 3.0], 25) == pytest.approx(1.5)


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary() -> None:
    summary = LatencySummary.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert summary is not None
    assert (summary.count, summary.p50_ms, summary.max_ms, summary.mean_ms) == (5, 3, 5, 3)
    assert LatencySummary.of([]) is None


def test_poisson_schedule_has_the_asked_rate_and_exponential_gaps() -> None:
    arrivals = poisson_arrivals(200.0, 50.0, random.Random(3))
    assert arrivals == sorted(arrivals)
    assert arrivals[0] > 0 and arrivals[-1] < 50.0
    assert len(arrivals) == pytest.approx(200 * 50, rel=0.05)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / 200, rel=0.05)
    # exponential: the standard deviation equals the mean, and ~63 % of gaps are below it
    assert statistics.pstdev(gaps) == pytest.approx(mean, rel=0.1)
    assert sum(gap < mean for gap in gaps) / len(gaps) == pytest.approx(1 - 1 / 2.718, abs=0.03)


def test_poisson_schedule_is_reproducible_and_checks_its_arguments() -> None:
    assert poisson_arrivals(50, 2, random.Random(1)) == poisson_arrivals(50, 2, random.Random(1))
    with pytest.raises(ValueError):
        poisson_arrivals(0, 10, random.Random(1))


def test_mean_batch_size_is_per_batch() -> None:
    # one batch of 4 (four requests say 4) and two batches of 1
    assert mean_batch_size([4, 4, 4, 4, 1, 1]) == pytest.approx(2.0)
    assert mean_batch_size([]) is None


def test_summarize_counts_errors_and_rates() -> None:
    completions = [Completion(sent_at=0.0, seen_at=0.010 * (i + 1), stamped_ms=5.0,
                              batch_size=2) for i in range(4)]
    completions.append(Completion(sent_at=0.0, seen_at=1.0, ok=False))
    point = summarize(completions, system="pool", mode="closed", duration_s=2.0, lost=1)
    assert point.requests == 5 and point.errors == 1 and point.lost == 1
    assert point.achieved_rps == 2.5
    assert point.latency is not None and point.latency.max_ms == pytest.approx(40.0)
    assert point.stamped is not None and point.stamped.p99_ms == 5.0
    assert point.mean_batch_size == pytest.approx(2.0)


def test_cpu_per_request_counts_every_answer_of_the_measurement() -> None:
    point = {"cpu_s": {"workers": 2.0, "broker": 0.5}, "answered_total": 1000}
    assert cpu_us_per_request(point, ["workers"]) == pytest.approx(2000)
    assert cpu_us_per_request(point, ["workers", "broker", "absent"]) == pytest.approx(2500)
    assert cpu_us_per_request(point, ["absent"]) is None
    assert cpu_us_per_request({"cpu_s": {"workers": 1.0}}, ["workers"]) is None


def test_text_cycle_wraps_around() -> None:
    cycle = TextCycle(["a", "b", "c"])
    assert cycle.take(2) == ["a", "b"]
    assert cycle.take(3) == ["c", "a", "b"]


def _point(system: str, offered: float | None, fraction: float | None, p99: float) -> Any:
    latency = {"count": 100, "p50_ms": p99 / 3, "p95_ms": p99 / 1.5, "p99_ms": p99,
               "mean_ms": p99 / 2, "max_ms": p99 * 1.2}
    return {"system": system, "mode": "open" if offered else "closed", "duration_s": 15.0,
            "requests": 1000, "achieved_rps": offered or 400.0, "offered_rps": offered,
            "fraction": fraction, "outstanding": None if offered else 256, "errors": 0,
            "lost": 0, "latency": latency, "stamped": latency if system == "pool" else None,
            "mean_batch_size": 12.5 if system == "pool" else None, "max_lag_ms": 1.0,
            "cpu_s": {"workers": 20.0, "redis": 1.0}, "cpu_wall_s": 15.0,
            "answered_total": 10_000, "note": ""}


def _result() -> dict[str, Any]:
    return {
        "command": "python -m ops.bench.run --quick",
        "started_at": "2026-01-01T00:00:00+00:00",
        "wall_s": 123.0,
        "machine": {"cores": 2, "cpu": "Test CPU", "platform": "Linux"},
        "versions": {"python": "3.11.7", "torch": "2.13.0"},
        "settings": {"model": "minilm", "precision": "int8", "workers": 2,
                     "threads_per_worker": 1, "max_batch_size": 32, "max_wait_ms": 10.0,
                     "partitions": 8, "outstanding": 256, "measure_s": 20.0, "open_s": 20.0,
                     "warmup_s": 3.0},
        "limit": {"requests_per_s": 420.0, "batch_ms_median": 150.0},
        "pool": {"saturation": _point("pool", None, None, 900.0),
                 "open": [_point("pool", 40.0, 0.1, 60.0), _point("pool", 200.0, 0.5, 180.0)]},
        "celery": {"layout": {"processes": 2, "threads": 1, "prefetch": 4, "why": "best"},
                   "saturation": _point("celery", None, None, 2000.0),
                   "open": [_point("celery", 40.0, 0.1, 50.0)]},
        "ratios": {"pool_over_limit": 400 / 420, "pool_over_celery": 400 / 135,
                   "celery_over_limit": 135 / 420},
        "targets": [{"name": "pool saturation >= 0.9 x limit", "measured": "0.95x",
                     "bound": "0.90x", "met": True},
                    {"name": "echo", "measured": "9,000/s", "bound": "20,000/s", "met": False}],
        "plot": "bench.png",
    }


def test_markdown_report_has_every_table() -> None:
    text = render_markdown(_result())
    assert text.startswith("# inferpool bench: minilm int8, 2 cores")
    assert "`python -m ops.bench.run --quick`" in text
    assert "| target | measured | bound | met |" in text
    assert "| pool saturation >= 0.9 x limit | 0.95x | 0.90x | yes |" in text
    assert "| echo | 9,000/s | 20,000/s | **no** |" in text
    assert "| pool | 200 | 50% | 200 | 60.0 | 120 | 180 | 180 | 12.5 | 0 |" in text
    assert "0.95x limit" in text and "pool = 2.96x Celery" in text
    assert "![latency against offered load](bench.png)" in text
    cpu_row = "| pool saturation | workers 1.33, redis 0.07 | 1.40 | workers 2,000, redis 100 |"
    assert cpu_row in text
    # every table row has as many cells as its header
    for block in text.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({row.count("|") for row in rows}) == 1, block


def test_markdown_report_without_celery_or_echo() -> None:
    result = _result()
    del result["celery"]
    text = render_markdown(result)
    assert "Celery, closed loop" not in text
    assert "echo," not in text


def test_plot_is_described_in_words() -> None:
    words = describe_plot(_result())
    assert "The pool: p50/p99 20.0/60.0 ms at 40 req/s, 60.0/180 ms at 200 req/s" in words
    assert "Celery" in words and "saturation" in words


def test_both_topologies_side_by_side_and_the_capacity_search() -> None:
    result = _result()
    pinned = _result()
    del pinned["celery"]
    pinned["topology"] = {"name": "pinned", "description": "pinned: services on 0"}
    pinned["settings"].update(workers=1, threads_per_worker=1)
    pinned["pool"]["capacity"] = {
        "capacity_rps": 380.0, "capacity_over_saturation": 0.95, "saturation_rps": 400.0,
        "rule": "r", "probes": [{"fraction": 0.95, "offered_rps": 380.0, "achieved_rps": 379.0,
                                 "early_p90_ms": 90.0, "late_p90_ms": 95.0, "p99_ms": 150.0,
                                 "mean_batch_size": 20.0, "stable": True}]}
    result["pinned"] = pinned
    text = render_markdown(result)
    assert "## Both topologies side by side" in text and "## Pinned topology: targets" in text
    assert "| pinned (1x1) | 420 |" in text
    assert "= 0.95x the closed-loop saturation (400 req/s)" in text
    assert "| 0.95 | 380 | 379 | 90.0 | 95.0 | 150 | 20.0 | yes |" in text
    assert "The pool pinned (dash-dot)" in describe_plot(result)
    for block in text.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({row.count("|") for row in rows}) == 1, block


def _open(offered: float, achieved: float, early: float | None, late: float | None,
          lost: int = 0) -> LoadPoint:
    return LoadPoint(system="pool", mode="open", duration_s=10, requests=100,
                     achieved_rps=achieved, offered_rps=offered, lost=lost,
                     early_p90_ms=early, late_p90_ms=late)


def test_a_rate_is_stable_only_if_answered_in_step_and_the_queue_does_not_grow() -> None:
    assert capacity.stable(_open(100, 99, 50, 60))
    assert not capacity.stable(_open(100, 90, 50, 60)), "falls behind"
    assert not capacity.stable(_open(100, 99, 50, 400)), "latency grows over the run"
    assert not capacity.stable(_open(100, 99, 50, 60, lost=1))
    assert not capacity.stable(_open(100, 99, None, None)), "too few answers to tell"


async def test_the_capacity_search_bisects_towards_the_highest_stable_rate() -> None:
    asked: list[float] = []

    async def measure(rate: float) -> LoadPoint:  # stable up to 80 % of 1000/s
        asked.append(rate)
        return _open(rate, rate if rate <= 800 else 0.8 * rate, 50, 60)

    found = await capacity.search(measure, 1000.0, depth=3)
    assert asked == pytest.approx([950, 725, 837.5])
    assert found["capacity_rps"] == 725.0 and found["capacity_over_saturation"] == 0.725
    assert [probe["stable"] for probe in found["probes"]] == [False, True, False]
