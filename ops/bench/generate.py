"""Generative throughput and time to first token: the pool's step engine against the same
model under plain batched ``generate()`` (the limit) and one request at a time (what a
per-task queue does), at several concurrencies, in one run (ratios are what to compare on
a shared machine).

    python ops/bench/generate.py --concurrency 1 4 16 32 --new-tokens 32 --threads 2

Through the pool: an in-process worker (embedded Tansu and Redis, one StepEngine,
``max_running`` = the largest concurrency); C requests submitted at once, each a raw
counting prompt that runs to ``--new-tokens``. Generated tokens/s = tokens / (last result
- submit); time to first token = submit -> the worker's first token (the result's
``queue_wait_ms + batch_wait_ms + time_to_first_token_ms``). Static: ``generate()`` of
the C prompts as one left-padded batch, ``min_new_tokens`` = ``max_new_tokens``; its TTFT
is a batched prefill plus one token. One at a time: C ``generate()`` calls in a row; the
k-th waits for the k-1 before it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import torch

from inferpool.embedded import TANSU_CLIENT_SETTINGS, EmbeddedBroker, EmbeddedRedis
from inferpool.logs import configure_logging
from inferpool.protocol import ResultKeys, ResultRecord
from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest
from results.reader import ResultReader
from worker.models.config import ModelConfig
from worker.models.generative.model import GenerativeModel
from worker.models.registry import ModelRegistry, load_model
from worker.pool import Worker

PROMPTS = [f"{start}, {start + 1}, {start + 2}, {start + 3}," for start in range(1, 400, 7)]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def prompts_ids(model: GenerativeModel, count: int) -> list[list[int]]:
    return [[int(i) for i in model.tokenizer(PROMPTS[i % len(PROMPTS)])["input_ids"]]
            for i in range(count)]


def static_batch(model: GenerativeModel, count: int, new: int) -> dict[str, float]:
    ids = prompts_ids(model, count)
    width = max(map(len, ids))
    batch = torch.tensor([[model.pad_id] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    with torch.inference_mode():
        started = time.perf_counter()
        model.hf_model.generate(input_ids=batch, attention_mask=mask, max_new_tokens=1,
                                do_sample=False, pad_token_id=model.pad_id)
        ttft = time.perf_counter() - started
        started = time.perf_counter()
        model.hf_model.generate(input_ids=batch, attention_mask=mask, max_new_tokens=new,
                                min_new_tokens=new, do_sample=False, pad_token_id=model.pad_id)
        seconds = time.perf_counter() - started
    return {"tokens_s": count * new / seconds, "ttft_p50": ttft, "ttft_p99": ttft}


def one_at_a_time(model: GenerativeModel, count: int, new: int) -> dict[str, float]:
    ttfts, elapsed = [], 0.0
    with torch.inference_mode():
        for prompt in prompts_ids(model, count):
            ids = torch.tensor([prompt])
            started = time.perf_counter()
            model.hf_model.generate(input_ids=ids, max_new_tokens=new, min_new_tokens=new,
                                    do_sample=False, pad_token_id=model.pad_id)
            seconds = time.perf_counter() - started
            ttfts.append(elapsed + seconds / new)  # waited for those before it, then a token
            elapsed += seconds
    return {"tokens_s": count * new / elapsed, "ttft_p50": statistics.median(ttfts),
            "ttft_p99": quantile(ttfts, 0.99)}


def compute_seconds(worker: Worker) -> dict[str, float]:
    """The step engine's model time so far, by phase (its metrics)."""
    counter = worker.metrics.generation.compute
    return {phase: counter.labels("smollm2", phase)._value.get() for phase in ("prefill", "decode")}


async def through_pool(settings: InferpoolSettings, count: int, new: int) -> dict[str, float]:
    params = {"raw": True, "max_new_tokens": new, "stop": "NEVER", "stream": True}
    keys = ResultKeys(settings.result_key_prefix)
    async with Producer(settings) as producer, ResultReader(settings.redis, keys) as reader:
        started = time.perf_counter()
        ids = await producer.submit_many(
            SubmitRequest("smollm2", PROMPTS[i % len(PROMPTS)], params=params)
            for i in range(count)
        )
        records: list[ResultRecord] = [r async for r in reader.wait_many(ids, 1800)]
        seconds = time.perf_counter() - started
    tokens = sum(r.outputs["completion_tokens"] for r in records)
    ttfts = [(r.timings.queue_wait_ms + r.timings.batch_wait_ms
              + (r.outputs["time_to_first_token_ms"] or 0)) / 1000 for r in records]
    return {"tokens_s": tokens / seconds, "ttft_p50": statistics.median(ttfts),
            "ttft_p99": quantile(ttfts, 0.99)}


def row(name: str, c: int, figures: dict[str, float], limit: dict[str, float]) -> str:
    return (f"| {name} | {c} | {figures['tokens_s']:.1f} | "
            f"{figures['tokens_s'] / limit['tokens_s']:.2f}x | {figures['ttft_p50'] * 1000:.0f} "
            f"| {figures['ttft_p99'] * 1000:.0f} |")


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning", "console")
    torch.set_num_threads(args.threads)
    largest = max(args.concurrency)
    config = ModelConfig(name="smollm2", loader="smollm2", quantization=args.precision,
                         options={"max_running": largest, "max_new_tokens": args.new_tokens})
    model = load_model(config)
    assert isinstance(model, GenerativeModel)
    print(f"model smollm2, precision {model.choice.precision.value}, {args.threads} threads, "
          f"{args.new_tokens} new tokens per request\n")
    print("| mode | concurrent | tokens/s | vs static limit | TTFT p50 ms | TTFT p99 ms |")
    print("|---|---|---|---|---|---|")
    with EmbeddedBroker() as broker, EmbeddedRedis() as redis:
        settings = InferpoolSettings(
            _env_file=None, kafka={"bootstrap_servers": broker.bootstrap_servers},
            redis={"url": redis.url}, request_topic="bench.generate", consumer_group="bench",
            dead_letter_topic="bench.dead", metrics_port=0, request_topic_partitions=1,
            **TANSU_CLIENT_SETTINGS,  # type: ignore[arg-type]
        )
        profiles: list[str] = []
        async with Worker(settings, ModelRegistry([model])) as worker:
            await asyncio.wait_for(worker.assigned.wait(), 60)
            await through_pool(settings, 1, 4)  # warm
            for c in args.concurrency:
                # the baselines run in a thread: the worker's loop (heartbeats) goes on
                limit = await asyncio.to_thread(static_batch, model, c, args.new_tokens)
                before, started = compute_seconds(worker), time.perf_counter()
                pool = await through_pool(settings, c, args.new_tokens)
                wall, after = time.perf_counter() - started, compute_seconds(worker)
                busy = {k: (after[k] - before[k]) / wall for k in after}
                profiles.append(f"pool at {c}: model busy {busy['decode']:.0%} decoding + "
                                f"{busy['prefill']:.0%} prefilling of the wall time")
                figures: dict[str, Any] = {
                    "pool": pool,
                    "static generate()": limit,
                    "one at a time": await asyncio.to_thread(
                        one_at_a_time, model, c, args.new_tokens
                    ),
                }
                for name, values in figures.items():
                    print(row(name, c, values, limit), flush=True)
    print("\n" + "\n".join(profiles))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="none", help="none (fp32), auto, int8, bf16")
    asyncio.run(main(parser.parse_args()))
