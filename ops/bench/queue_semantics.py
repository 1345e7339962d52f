"""Queue semantics, measured (not a test): what priority lanes and fair share buy, and how
far admission's prediction is off. ``python -m ops.bench.queue_semantics [--json FILE]``.

One in-process worker serves a paced model (``BATCH_S`` per batch of ``BATCH_SIZE``,
whatever it holds: a model of known capacity), against an embedded Tansu broker and Redis.
Each phase has its own topics, group and key prefix.

1. **Priority.** A saturating backlog of low requests (``BACKLOG`` at once), and a trickle
   of urgent requests during it; the urgent ones' latency with lanes (``priority=high``)
   against the same load without lanes (everything in the normal lane).
2. **Fair share.** A noisy tenant floods ``BACKLOG`` requests; a quiet one sends a trickle
   during it; the quiet one's p99 with fair share (each request names its tenant) against
   without (no tenant field: one queue, first come first served). Fair share orders what a
   worker holds, so this runs with a worker that holds the whole flood
   (``HOLD`` in flight, all of it for the normal lane), and once more with the defaults
   (it holds 512 of the flood: the quiet requests queue behind the rest in Kafka).
3. **Admission's prediction.** Under a backlog refilled in waves, a probe request now and
   then: the prediction (``Producer.predicted_wait_ms``) when it was submitted against its
   measured end-to-end time.

The ratios come out in one run, in the closing lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inferpool.embedded import TANSU_CLIENT_SETTINGS, EmbeddedBroker, EmbeddedRedis
from inferpool.protocol import ResultKeys, ResultRecord
from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest
from results.reader import ResultReader
from worker.models.base import ListModel
from worker.models.registry import ModelRegistry
from worker.pool import Worker

BATCH_S = 0.02
BATCH_SIZE = 8  # 400 requests a second at most
BACKLOG = 2000  # 5 s of the model's capacity
HOLD = {"max_inflight_requests": 4096, "lane_share_normal": 1.0}
TRICKLE = 25  # urgent / quiet requests, one every TRICKLE_GAP_S
TRICKLE_GAP_S = 0.1
PROBES = 15
JOIN_TIMEOUT_S = 30.0
RESULT_TIMEOUT_S = 120.0


class PacedModel(ListModel):
    name = "paced"
    version = "1"

    def forward(self, batch: Any) -> Any:
        time.sleep(BATCH_S)
        return batch


@dataclass(frozen=True, slots=True)
class Latencies:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, records: Sequence[ResultRecord]) -> Latencies:
        values = sorted(r.timings.end_to_end_ms for r in records)
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        return cls(len(values), statistics.median(values), p99, values[-1])


def phase_settings(
    broker: EmbeddedBroker, redis: EmbeddedRedis, **update: Any
) -> InferpoolSettings:
    name = f"qs{uuid.uuid4().hex[:8]}"
    return InferpoolSettings(
        _env_file=None,
        kafka={"bootstrap_servers": broker.bootstrap_servers},
        redis={"url": redis.url},
        request_topic=f"{name}.requests",
        request_topic_partitions=4,
        dead_letter_topic=f"{name}.dead-letter",
        consumer_group=f"{name}-workers",
        result_key_prefix=name,
        max_batch_size=BATCH_SIZE,
        max_wait_ms=5,
        metrics_host="127.0.0.1",
        metrics_port=0,
        log_level="warning",
        **TANSU_CLIENT_SETTINGS,
        **update,
    )


async def _trickle(
    producer: Producer, count: int, **fields: Any
) -> list[str]:
    ids = []
    for index in range(count):
        ids.append(await producer.submit("paced", f"t{index}", **fields))
        await asyncio.sleep(TRICKLE_GAP_S)  # paces the load generator; nothing waits on it
    return ids


async def _under_backlog(
    settings: InferpoolSettings, backlog: dict[str, Any], trickle: dict[str, Any]
) -> Latencies:
    """The trickle's latencies while a backlog of BACKLOG requests is being served."""
    async with (
        Worker(settings, ModelRegistry([PacedModel()])) as worker,
        ResultReader(settings.redis, ResultKeys(settings.result_key_prefix)) as reader,
        Producer(settings) as producer,
    ):
        await asyncio.wait_for(worker.assigned.wait(), JOIN_TIMEOUT_S)
        flood = await producer.submit_many(
            SubmitRequest("paced", f"b{i}", **backlog) for i in range(BACKLOG)
        )
        await reader.wait(flood[0], RESULT_TIMEOUT_S)  # the backlog is being served
        ids = await _trickle(producer, TRICKLE, **trickle)
        records = [r async for r in reader.wait_many(ids, RESULT_TIMEOUT_S)]
        async for _ in reader.wait_many(flood, RESULT_TIMEOUT_S):
            pass
    return Latencies.of(records)


async def _prediction_errors(settings: InferpoolSettings) -> dict[str, Any]:
    """Relative error (actual - predicted) / actual of PROBES probes under a refilled
    backlog (the probes are of the backlog's tenant, so they queue behind it)."""
    async with (
        Worker(settings, ModelRegistry([PacedModel()])) as worker,
        ResultReader(settings.redis, ResultKeys(settings.result_key_prefix)) as reader,
        Producer(settings, control=reader) as producer,
    ):
        await asyncio.wait_for(worker.assigned.wait(), JOIN_TIMEOUT_S)
        everything: list[str] = []
        probes: list[tuple[str, float]] = []
        for wave in range(PROBES):
            everything += await producer.submit_many(
                SubmitRequest("paced", f"w{wave}.{i}", tenant="load") for i in range(150)
            )
            await asyncio.sleep(0.3)  # paces the waves; the summaries catch up meanwhile
            predicted = await producer.predicted_wait_ms("paced")
            probe = await producer.submit("paced", "probe", tenant="load")
            probes.append((probe, predicted))
        found = {r.id: r async for r in reader.wait_many(everything + [p for p, _ in probes],
                                                          RESULT_TIMEOUT_S)}
    pairs = [(predicted, found[probe].timings.end_to_end_ms)
             for probe, predicted in probes[1:]]  # the first: no rate measured yet
    errors = sorted((actual - predicted) / actual for predicted, actual in pairs)
    absolute = sorted(abs(e) for e in errors)
    return {
        "probes": len(errors),
        "median_relative_error": statistics.median(errors),
        "median_abs_relative_error": statistics.median(absolute),
        "max_abs_relative_error": absolute[-1],
        "predicted_and_actual_ms": [[round(p), round(a)] for p, a in pairs],
    }


async def run() -> dict[str, Any]:
    with EmbeddedBroker() as broker, EmbeddedRedis() as redis:
        def fresh(**update: Any) -> InferpoolSettings:
            return phase_settings(broker, redis, **update)

        lanes = await _under_backlog(fresh(), {"priority": "low"}, {"priority": "high"})
        no_lanes = await _under_backlog(fresh(), {}, {})
        fair = await _under_backlog(fresh(**HOLD), {"tenant": "noisy"}, {"tenant": "quiet"})
        unfair = await _under_backlog(fresh(**HOLD), {}, {})
        fair_default = await _under_backlog(fresh(), {"tenant": "noisy"}, {"tenant": "quiet"})
        prediction = await _prediction_errors(fresh(load_report_interval_ms=200))
    return {
        "model": {"batch_s": BATCH_S, "batch_size": BATCH_SIZE, "backlog": BACKLOG},
        "priority": {"with_lanes": asdict(lanes), "without_lanes": asdict(no_lanes),
                     "p99_ratio": no_lanes.p99_ms / lanes.p99_ms},
        "fair_share": {"with": asdict(fair), "without": asdict(unfair),
                       "p99_ratio": unfair.p99_ms / fair.p99_ms, "hold": HOLD,
                       "with_default_hold": asdict(fair_default),
                       "default_hold_p99_ratio": unfair.p99_ms / fair_default.p99_ms},
        "admission_prediction": prediction,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = asyncio.run(run())
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    priority, fair = figures["priority"], figures["fair_share"]
    print(json.dumps(figures, indent=2))
    print(f"urgent p99 under a low backlog: {priority['with_lanes']['p99_ms']:.0f} ms with lanes, "
          f"{priority['without_lanes']['p99_ms']:.0f} ms without: "
          f"{priority['p99_ratio']:.1f}x better")
    print(f"quiet tenant p99 under a flood: {fair['with']['p99_ms']:.0f} ms with fair share, "
          f"{fair['without']['p99_ms']:.0f} ms without: {fair['p99_ratio']:.1f}x better "
          f"(the flood held by the worker; with the default hold: "
          f"{fair['with_default_hold']['p99_ms']:.0f} ms)")
    error = figures["admission_prediction"]
    print(f"admission prediction: median |error| {100 * error['median_abs_relative_error']:.0f}%"
          f", max {100 * error['max_abs_relative_error']:.0f}% of the actual wait "
          f"({error['probes']} probes)")


if __name__ == "__main__":
    main()
