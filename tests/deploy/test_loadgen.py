"""ops/loadgen.py: pacing, percentiles and bounds (fast), and one short run against a real
broker, Redis and an in-process worker (slow)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from inferpool.settings import InferpoolSettings

LOADGEN_PATH = Path(__file__).resolve().parents[2] / "ops" / "loadgen.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("inferpool_ops_loadgen", LOADGEN_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


loadgen = _load()


def test_due_keeps_the_rate_and_the_limit() -> None:
    assert loadgen.due(100.0, 0.1, 0, 1000) == 10
    assert loadgen.due(100.0, 0.1, 10, 1000) == 0
    assert loadgen.due(100.0, 1.0, 10, 1000) == 90  # catches up after a slow submit
    assert loadgen.due(100.0, 60.0, 990, 1000) == 10  # never past the limit
    assert loadgen.due(0.5, 1.0, 0, 10) == 0


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50.0
    assert loadgen.percentile(values, 99) == 99.0
    assert loadgen.percentile(values, 100) == 100.0
    assert loadgen.percentile([3.0], 50) == 3.0
    assert math.isnan(loadgen.percentile([], 50))


@pytest.mark.parametrize("argv", [
    ["--rate", "0"],
    ["--rate", "20000"],
    ["--duration", "3601"],
    ["--max-requests", "0"],
    ["--result-timeout", "601"],
    ["--input", "{not json"],
])
def test_arguments_are_bounded(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        loadgen.build_parser().parse_args(argv)


@pytest.mark.slow
async def test_a_short_run_gets_every_result(settings: InferpoolSettings) -> None:
    from worker.pool import Worker  # imports torch: only for this test

    options = loadgen.build_parser().parse_args(
        ["--model", "echo", "--rate", "100", "--duration", "1", "--result-timeout", "30"])
    async with Worker(settings) as worker:
        await asyncio.wait_for(worker.assigned.wait(), 20)
        tally = await loadgen.generate(settings, options)
    report = loadgen.summary(tally, options)
    assert report["planned"] == report["submitted"] == 100
    assert report["statuses"] == {"ok": 100}
    assert report["missing"] == 0
    assert report["latency_ms"]["p50"] > 0
