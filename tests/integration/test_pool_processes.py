"""Worker processes, as deployed: ``inferpool worker`` children sharing one consumer group."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest
from pool_helpers import WorkerProcess, collect, read_calls, wait_until_committed

from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest

pytestmark = pytest.mark.slow


async def start_workers(
    settings: InferpoolSettings, tmp_path: Path, count: int
) -> list[WorkerProcess]:
    workers = [WorkerProcess(settings, tmp_path, f"worker-{index}") for index in range(count)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            await worker.wait_for_event("rebalance.assigned")
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    return workers


async def test_a_thousand_requests_through_two_worker_processes(
    settings: InferpoolSettings, tmp_path: Path
) -> None:
    workers = await start_workers(settings, tmp_path, 2)
    try:
        inputs = [{"n": index} for index in range(1000)]
        async with Producer(settings) as producer:
            ids = await producer.submit_many(SubmitRequest("echo", value) for value in inputs)
        results = await collect(settings, ids, timeout_s=60)
        await wait_until_committed(settings, len(ids))
        for worker in workers:
            worker.signal(signal.SIGTERM)
        codes = [await worker.wait_exit() for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert codes == [0, 0]
    assert [results[i].outputs for i in ids] == inputs
    calls = Counter(call["n"] for call in read_calls(workers[0].call_log))
    assert sorted(calls) == list(range(1000)) and set(calls.values()) == {1}
    assert len({result.worker for result in results.values()}) == 2


async def test_sigterm_under_load_drains_without_loss_or_duplicates(
    settings: InferpoolSettings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"max_batch_size": 8, "max_wait_ms": 20})
    workers = await start_workers(settings, tmp_path, 2)
    leaving, staying = workers
    try:
        async with Producer(settings) as producer:
            first = await producer.submit_many(SubmitRequest("echo", {"n": i}) for i in range(600))
            leaving.signal(signal.SIGTERM)
            stopped = asyncio.create_task(leaving.wait_exit())
            second = await producer.submit_many(
                SubmitRequest("echo", {"n": i}) for i in range(600, 1200)
            )
        results = await collect(settings, first + second, timeout_s=90)
        code = await stopped
        await wait_until_committed(settings, 1200, timeout_s=30)
    finally:
        for worker in workers:
            worker.kill()
    assert code == 0
    drained = [e for e in leaving.events() if e.get("event") == "worker.stopped"]
    assert drained, "the worker did not finish its drain"
    assert len(results) == 1200
    calls = Counter(call["n"] for call in read_calls(leaving.call_log))
    assert sorted(calls) == list(range(1200))
    assert set(calls.values()) == {1}, "a graceful drain must not cause duplicate processing"
    assert {r.worker for r in results.values()} >= {staying_id(staying)}


def staying_id(worker: WorkerProcess) -> str:
    started = [e for e in worker.events() if e.get("event") == "worker.started"]
    return str(started[0]["worker"])
