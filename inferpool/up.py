"""``inferpool up``: the embedded default on loopback — a Tansu broker, a Redis, N worker
processes — and, with ``--demo``, a demo load that prints results and a summary.

Ctrl-C (or the end of the demo) stops everything it started, in reverse order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inferpool.embedded import TANSU_CLIENT_SETTINGS, EmbeddedBroker, EmbeddedRedis
from inferpool.errors import InferpoolError
from inferpool.protocol.wire import WireTensor
from inferpool.settings import InferpoolSettings, settings_environment

DEMO_SENTENCES = [
    "The quick brown fox jumps over the lazy dog",
    "Kafka keeps the requests, Redis keeps the answers",
    "Micro-batching trades a few milliseconds for throughput",
    "Every request ends with exactly one result",
]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("up", help="run a local broker, Redis and workers on loopback")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--models",
        default=None,
        help="models the workers serve (default: INFERPOOL_MODELS, i.e. echo)",
    )
    parser.add_argument("--broker-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--redis-port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--demo",
        type=int,
        nargs="?",
        const=2000,
        default=None,
        metavar="N",
        help="submit N demo requests (default 2000), print a summary, stop",
    )
    parser.add_argument("--stay", action="store_true", help="keep running after the demo")
    parser.set_defaults(func=run, overrides=_overrides)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"models": args.models} if args.models else {}


def run(args: argparse.Namespace, settings: InferpoolSettings) -> int:
    with EmbeddedBroker(args.broker_port) as broker, EmbeddedRedis(args.redis_port) as redis:
        settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(
                    update={"bootstrap_servers": broker.bootstrap_servers}
                ),
                "redis": settings.redis.model_copy(update={"url": redis.url}),
                **TANSU_CLIENT_SETTINGS,
            }
        )
        print(f"broker  {broker.bootstrap_servers}  (Tansu, memory storage; log {broker.log_path})")
        print(f"redis   {redis.url}  (log {redis.log_path})")
        with _workers(settings, args.workers) as (logs, pids):
            print(f"workers {args.workers}  (pids {', '.join(map(str, pids))}; logs {logs})")
            print(
                f"\nexport INFERPOOL_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers} "
                f"INFERPOOL_REDIS_URL={redis.url}\n"
            )
            try:
                if args.demo is not None:
                    asyncio.run(demo(settings, args.demo))
                if args.demo is None or args.stay:
                    print("running; Ctrl-C stops everything", flush=True)
                    stop_signals = {signal.SIGINT, signal.SIGTERM}
                    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
                    signal.sigwait(stop_signals)
            except KeyboardInterrupt:
                pass
            print("stopping workers, then Redis, then the broker", flush=True)
    return 0


@contextlib.contextmanager
def _workers(settings: InferpoolSettings, count: int) -> Iterator[tuple[Path, list[int]]]:
    logdir = Path(tempfile.mkdtemp(prefix="inferpool-workers-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERPOOL_")}
    env.update(_environment(settings, count))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            with (logdir / f"worker-{index}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "inferpool", "worker"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        _wait_until_joined(logdir, processes)
        yield logdir, [process.pid for process in processes]
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(settings.drain_timeout_s + 5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_joined(
    logdir: Path, processes: list[subprocess.Popen[bytes]], timeout_s: float = 60.0
) -> None:
    """Wait until every worker has logged its first partition assignment."""
    deadline = time.monotonic() + timeout_s
    pending = set(range(len(processes)))
    while pending:
        for index in list(pending):
            if processes[index].poll() is not None:
                log = (logdir / f"worker-{index}.log").read_text(errors="replace")
                raise InferpoolError(f"worker {index} exited at start:\n{log[-2000:]}")
            if '"rebalance.assigned"' in (logdir / f"worker-{index}.log").read_text(
                errors="replace"
            ):
                pending.discard(index)
        if time.monotonic() > deadline:
            raise InferpoolError(
                f"workers {sorted(pending)} did not join within {timeout_s}s; see {logdir}"
            )
        time.sleep(0.1)


def _threads_per_worker(workers: int) -> int:
    """Share the cores: processes of one thread each beat one process of many threads."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _environment(settings: InferpoolSettings, count: int) -> dict[str, str]:
    """The workers read these settings, with one torch thread per core each, JSON logs, and
    their health port picked free (each logs it: event health.listening)."""
    worker = settings.model_copy(
        update={
            "torch_threads": settings.torch_threads or _threads_per_worker(count),
            "log_format": "json",
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
        }
    )
    return settings_environment(worker)


async def demo(settings: InferpoolSettings, count: int) -> None:
    from inferpool.protocol import ResultKeys
    from producer.client import Producer, SubmitRequest
    from results.reader import ResultReader

    model = settings.models[0].partition("=")[0]
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
