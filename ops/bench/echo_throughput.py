"""Echo throughput: how many requests/s the pipeline itself moves, per worker count.

Pre-loads N requests into the request topic, then starts K ``inferpool worker`` processes
(model ``echo``) against an embedded broker and Redis, and reports N / (last result written
- first result written), from the results' own ``finished_ms`` stamps.

    python ops/bench/echo_throughput.py --requests 20000 --workers 1 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inferpool.embedded import TANSU_CLIENT_SETTINGS, EmbeddedBroker, EmbeddedRedis
from inferpool.logs import configure_logging
from inferpool.protocol import ResultKeys
from inferpool.settings import InferpoolSettings, settings_environment
from inferpool.topics import ensure_topics
from producer.client import Producer, SubmitRequest
from results.reader import ResultReader


async def preload(settings: InferpoolSettings, count: int) -> list[str]:
    await ensure_topics(settings.kafka, [settings.request_topic],
                        settings.request_topic_partitions, 1)
    async with Producer(settings) as producer:
        ids: list[str] = []
        for start in range(0, count, 5000):
            chunk = range(start, min(count, start + 5000))
            ids += await producer.submit_many(SubmitRequest("echo", {"n": i}) for i in chunk)
    return ids


async def collect(settings: InferpoolSettings, ids: list[str]) -> list[int]:
    reader = ResultReader(settings.redis, ResultKeys(settings.result_key_prefix), 0.5)
    async with reader:
        return [record.finished_ms async for record in reader.wait_many(ids, timeout_s=300)]


def run_once(count: int, workers: int, batch: int) -> float:
    with EmbeddedBroker() as broker, EmbeddedRedis() as redis:
        settings = InferpoolSettings(
            _env_file=None, kafka={"bootstrap_servers": broker.bootstrap_servers},
            redis={"url": redis.url}, max_batch_size=batch, request_topic_partitions=8)
        ids = asyncio.run(preload(settings, count))
        worker = settings.model_copy(update={
            "max_inflight_requests": batch * 32, "log_level": "warning",
            **TANSU_CLIENT_SETTINGS, "metrics_host": "127.0.0.1", "metrics_port": 0,
        })
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERPOOL_")}
        env.update(settings_environment(worker))
        logdir = Path(tempfile.mkdtemp(prefix="echo-bench-"))
        processes = [subprocess.Popen([sys.executable, "-m", "inferpool", "worker"], env=env,
                                      stdout=(logdir / f"w{i}.log").open("wb"),
                                      stderr=subprocess.STDOUT) for i in range(workers)]
        try:
            finished = asyncio.run(collect(settings, ids))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
    span_s = (max(finished) - min(finished)) / 1000
    return count / span_s


def main() -> None:
    configure_logging("warning", "console")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(f"echo, {args.requests} pre-loaded requests, max_batch_size {args.batch}, "
          f"{os.cpu_count()} cores (broker, Redis and workers share them)")
    for workers in args.workers:
        started = time.perf_counter()
        rate = run_once(args.requests, workers, args.batch)
        print(f"  {workers} worker(s): {rate:,.0f} requests/s  "
              f"({time.perf_counter() - started:.0f}s wall for the run)")


if __name__ == "__main__":
    main()
