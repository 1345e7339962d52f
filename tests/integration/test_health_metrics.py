"""A worker's /healthz, /readyz and /metrics: ready only after warm-up and joining."""

from __future__ import annotations

import asyncio
import threading

import testing_models
from pool_helpers import collect

from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest
from worker.models.registry import ModelRegistry
from worker.pool import Worker


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    status = int(response.split()[1])
    return status, response.split("\r\n\r\n", 1)[1]


class SlowWarmup(testing_models.RecordingEcho):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def warmup(self) -> None:
        self.release.wait(30)


async def wait_for_status(port: int, path: str, status: int) -> None:
    async with asyncio.timeout(20):
        while (await http_get(port, path))[0] != status:
            await asyncio.sleep(0.05)


async def test_ready_only_after_warm_up_and_joining(settings: InferpoolSettings) -> None:
    model = SlowWarmup()
    worker = Worker(settings, ModelRegistry([model]))
    starting = asyncio.create_task(worker.start())
    try:
        async with asyncio.timeout(10):
            while getattr(worker, "health", None) is None:
                await asyncio.sleep(0.01)
        port = worker.health.port
        assert (await http_get(port, "/healthz"))[0] == 200
        assert (await http_get(port, "/readyz"))[0] == 503  # still warming up
        model.release.set()
        await starting
        await wait_for_status(port, "/readyz", 200)
        assert worker.assigned.is_set()
        assert (await http_get(port, "/nope"))[0] == 404
    finally:
        model.release.set()
        await starting
        await worker.stop()


async def test_metrics_count_requests_batches_and_errors(settings: InferpoolSettings) -> None:
    async with Worker(settings, ModelRegistry([testing_models.RecordingEcho()])) as worker:
        await asyncio.wait_for(worker.assigned.wait(), 20)
        async with Producer(settings) as producer:
            ids = await producer.submit_many(SubmitRequest("echo", i) for i in range(30))
            ids.append(await producer.submit("no-such-model", 1))
        await collect(settings, ids)
        status, text = await http_get(worker.health.port, "/metrics")
    assert status == 200
    assert 'inferpool_requests_total{model="echo",status="ok"} 30.0' in text
    assert 'inferpool_errors_total{code="unknown_model"} 1.0' in text
    assert 'inferpool_dead_letters_total{code="unknown_model"} 1.0' in text
    assert 'inferpool_batch_size_count{model="echo"}' in text
    assert "inferpool_end_to_end_seconds_bucket" in text
    assert "inferpool_inflight_requests" in text and "inferpool_ready 1.0" in text
    assert 'inferpool_consumer_lag{partition="' in text
