"""The pipeline's own ceiling: one worker serving ``echo`` (no model cost) drains requests
pre-loaded into its topic, so the load generator costs nothing while it is measured.

The worker joins its group, is frozen (SIGSTOP) while the requests are published, and is
thawed; it is done when its group has committed every offset (a worker commits an offset
only once the result is in Redis). The rate comes from the results' own ``finished_ms``
stamps; CPU per request from /proc, for the worker (and its event-loop thread alone),
Redis and the broker. With ``profile``, the worker's event-loop thread runs under cProfile
timed by that thread's own CPU clock (so waiting, and the time it is frozen, cost nothing),
and the functions that cost it most are returned.

``python -m ops.bench.echo --profiled-worker FILE`` is that profiled worker.
"""

from __future__ import annotations

import asyncio
import pstats
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from inferpool.protocol import ResultKeys, decode_result
from inferpool.settings import InferpoolSettings
from inferpool.topics import ensure_topics
from ops.bench.cpu import process_cpu_s, thread_cpu_s
from ops.bench.pool_workers import PoolWorkers
from ops.bench.stats import mean_batch_size
from producer.client import Producer, SubmitRequest
from results.redis_client import open_redis

PUBLISH_CHUNK = 5000
READ_CHUNK = 2000
PROFILE_ROWS = 15


@dataclass(slots=True)
class EchoResult:
    workers: int
    requests: int
    requests_per_s: float  # from the first to the last result's finished_ms
    drain_s: float  # thaw -> every offset committed (as polled)
    worker_cpu_us_per_request: float | None
    loop_thread_cpu_us_per_request: float | None  # the worker's event-loop thread alone
    loop_thread_busy: float | None  # its CPU seconds / the drain's wall seconds
    redis_cpu_us_per_request: float | None
    broker_cpu_us_per_request: float | None
    mean_batch_size: float | None
    errors: int
    profiled: bool = False
    profile: list[dict[str, Any]] = field(default_factory=list)  # top by own time
    profile_stages: list[dict[str, Any]] = field(default_factory=list)  # project code, cumul.
    profile_total_s: float | None = None  # CPU seconds the profile covers

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _publish(settings: InferpoolSettings, texts: list[str]) -> list[str]:
    ids: list[str] = []
    async with Producer(settings) as producer:
        for start in range(0, len(texts), PUBLISH_CHUNK):
            ids += await producer.submit_many(
                SubmitRequest("echo", text) for text in texts[start : start + PUBLISH_CHUNK])
    return ids


async def _wait_committed(settings: InferpoolSettings, total: int, timeout_s: float) -> None:
    consumer = AIOKafkaConsumer(group_id=settings.consumer_group, enable_auto_commit=False,
                                **settings.kafka.client_options())
    await consumer.start()
    partitions = [TopicPartition(settings.request_topic, p)
                  for p in range(settings.request_topic_partitions)]
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                committed = [await consumer.committed(tp) for tp in partitions]
                if sum(offset or 0 for offset in committed) >= total:
                    return
                await asyncio.sleep(0.05)
    finally:
        await consumer.stop()


async def _read_results(settings: InferpoolSettings, ids: list[str]) -> list[Any]:
    keys = ResultKeys(settings.result_key_prefix)
    client = open_redis(settings.redis)
    records = []
    try:
        for start in range(0, len(ids), READ_CHUNK):
            chunk = ids[start : start + READ_CHUNK]
            values = await client.mget([keys.result(rid) for rid in chunk])
            records += [decode_result(rid, raw) for rid, raw in zip(chunk, values, strict=True)
                        if isinstance(raw, bytes)]
    finally:
        await client.aclose()
    return records


PROJECT_DIRS = ("/worker/", "/results/", "/producer/", "/inferpool/")


def _row(key: tuple[str, int, str], entry: tuple[Any, ...]) -> dict[str, Any]:
    filename, line, function = key
    where = filename.split("site-packages/")[-1].split("/main/")[-1]
    _, calls, own, cumulative, _ = entry
    return {"function": f"{where}:{line}({function})", "tottime_s": own,
            "cumtime_s": cumulative, "calls": calls}


def _profile_rows(paths: list[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """The top functions by own time; the project's own functions by cumulative time (which
    stage of the worker costs what); and the total CPU time profiled."""
    existing = [str(path) for path in paths if path.is_file()]
    if not existing:
        return [], [], 0.0
    stats = pstats.Stats(*existing)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    by_own = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)
    project = [item for item in entries.items()
               if any(part in item[0][0] for part in PROJECT_DIRS)
               and not item[0][2].startswith("<")]
    by_cumulative = sorted(project, key=lambda item: item[1][3], reverse=True)
    total: float = stats.total_tt  # type: ignore[attr-defined]
    return ([_row(k, v) for k, v in by_own[:PROFILE_ROWS]],
            [_row(k, v) for k, v in by_cumulative[:PROFILE_ROWS]], total)


async def measure(
    settings: InferpoolSettings, texts: list[str], logdir: Path, broker_pid: int,
    redis_pid: int, profile: bool = False, timeout_s: float = 300.0,
) -> EchoResult:
    """Pre-load ``len(texts)`` echo requests, let one worker drain them, measure."""
    await ensure_topics(settings.kafka, [settings.request_topic, settings.dead_letter_topic],
                        settings.request_topic_partitions, 1)
    workers = PoolWorkers(settings, 1, 1, logdir, name="echo-profiled" if profile else "echo",
                          profile=profile)
    await asyncio.to_thread(workers.start)
    try:
        workers.signal_all(signal.SIGSTOP)
        ids = await _publish(settings, texts)
        worker = workers.pids[0]
        probes: dict[str, Callable[[], float | None]] = {
            "worker": lambda: process_cpu_s(worker),
            "loop thread": lambda: thread_cpu_s(worker, worker),
            "redis": lambda: process_cpu_s(redis_pid),
            "broker": lambda: process_cpu_s(broker_pid),
        }
        before = {name: probe() for name, probe in probes.items()}
        thawed = time.perf_counter()
        workers.signal_all(signal.SIGCONT)
        await _wait_committed(settings, len(ids), timeout_s)
        drain_s = time.perf_counter() - thawed
        after = {name: probe() for name, probe in probes.items()}
    finally:
        await asyncio.to_thread(workers.stop)
    records = await _read_results(settings, ids)
    finished = [record.finished_ms for record in records]
    span_s = max((max(finished) - min(finished)) / 1000, 1e-3) if finished else drain_s

    def per_request_us(name: str) -> float | None:
        start, end = before[name], after[name]
        return None if start is None or end is None else (end - start) / len(ids) * 1e6

    loop_us = per_request_us("loop thread")
    top, stages, total = _profile_rows(workers.profile_paths) if profile else ([], [], 0.0)
    return EchoResult(
        workers=1,
        requests=len(ids),
        requests_per_s=len(records) / span_s,
        drain_s=drain_s,
        worker_cpu_us_per_request=per_request_us("worker"),
        loop_thread_cpu_us_per_request=loop_us,
        loop_thread_busy=None if loop_us is None else loop_us * len(ids) / 1e6 / drain_s,
        redis_cpu_us_per_request=per_request_us("redis"),
        broker_cpu_us_per_request=per_request_us("broker"),
        mean_batch_size=mean_batch_size(record.batch_size for record in records),
        errors=sum(1 for record in records if not record.ok) + len(ids) - len(records),
        profiled=profile,
        profile=top,
        profile_stages=stages,
        profile_total_s=total if profile else None,
    )


def profiled_worker(path: Path) -> int:
    """``inferpool worker``, its event-loop thread profiled on that thread's CPU clock."""
    import cProfile

    from inferpool_app.cli import main as inferpool_main

    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        return inferpool_main(["worker"])
    finally:
        profiler.disable()
        profiler.dump_stats(str(path))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--profiled-worker":
        sys.exit("usage: python -m ops.bench.echo --profiled-worker FILE")
    sys.exit(profiled_worker(Path(sys.argv[2])))
