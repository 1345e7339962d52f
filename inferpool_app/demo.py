"""The demo load of ``inferpool up --demo N``: N requests, live progress lines, a summary.

What it prints is for a person to read; its own log events go where ``up`` sends them.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

from inferpool.protocol import ResultKeys
from inferpool.protocol.wire import WireTensor
from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest
from results.reader import ResultReader

DEMO_SENTENCES = [
    "The quick brown fox jumps over the lazy dog",
    "Kafka keeps the requests, Redis keeps the answers",
    "Micro-batching trades a few milliseconds for throughput",
    "Every request ends with exactly one result",
]


#: Loaders whose models generate text token by token (the demo streams their answers).
GENERATIVE_LOADERS = frozenset({"smollm2", "hf-causal"})


def _is_generative(settings: InferpoolSettings, model: str) -> bool:
    from worker.models.config import model_configs

    configs = {c.name: c for c in model_configs(settings.models, settings.models_file)}
    config = configs.get(model)
    return config is not None and config.loader.partition(":")[0] in GENERATIVE_LOADERS


async def demo(settings: InferpoolSettings, count: int) -> None:
    model = settings.models[0].partition("=")[0]
    if _is_generative(settings, model):
        from inferpool_app.demo_generate import generative_demo

        await generative_demo(settings, model, count)
        return
    inputs = [f"{DEMO_SENTENCES[i % len(DEMO_SENTENCES)]} (#{i})" for i in range(count)]
    print(f"demo: {count} requests for model {model!r}")
    async with (
        Producer(settings) as producer,
        ResultReader(
            settings.redis, ResultKeys(settings.result_key_prefix), poll_interval_s=0.5
        ) as reader,
    ):
        started = time.perf_counter()
        ids = await producer.submit_many(SubmitRequest(model, text) for text in inputs)
        submitted = time.perf_counter() - started
        print(f"submitted {count} in {submitted:.2f}s")
        records = []
        async for record in reader.wait_many(ids, timeout_s=120):
            records.append(record)
            if len(records) <= 3:
                print(
                    f"  result {record.id}: status={record.status.value} "
                    f"outputs={_short(record.outputs)} batch={record.batch_size}"
                )
            if len(records) % max(1, count // 5) == 0:
                print(f"  {_progress(records, count, time.perf_counter() - started)}", flush=True)
        elapsed = time.perf_counter() - started
    _summary(records, elapsed)


def _progress(records: list[Any], count: int, elapsed: float) -> str:
    """One live line: answered so far, throughput, latency quantiles, mean batch size."""
    latencies = sorted(r.timings.end_to_end_ms for r in records)
    p50, p99 = (
        latencies[len(latencies) // 2],
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    )
    batch = statistics.mean(r.batch_size or 1 for r in records)
    return (
        f"{len(records)}/{count} answered  {len(records) / elapsed:,.0f} req/s  "
        f"p50 {p50:.0f} ms  p99 {p99:.0f} ms  mean batch {batch:.1f}"
    )


def _short(value: Any) -> str:
    if isinstance(value, WireTensor):
        head = ", ".join(f"{x:.3f}" for x in value.to_torch().flatten()[:4].tolist())
        return f"{value.dtype}{list(value.shape)} [{head}, ...]"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _summary(records: list[Any], elapsed: float) -> None:
    latencies = sorted(r.timings.end_to_end_ms for r in records)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    statuses = Counter(r.status.value for r in records)
    sizes = [r.batch_size for r in records if r.batch_size]
    print(f"\nanswered {len(records)} in {elapsed:.2f}s = {len(records) / elapsed:,.0f} requests/s")
    print(f"statuses {dict(statuses)}; workers {len({r.worker for r in records})}")
    print(
        f"end-to-end latency ms: p50 {quantiles[49]:.1f}  p95 {quantiles[94]:.1f}  "
        f"p99 {quantiles[98]:.1f}"
    )
    if sizes:
        print(f"batch size: mean {statistics.mean(sizes):.1f}, max {max(sizes)}")
