"""Helpers of the fault suite: a fleet of ``inferpool worker`` processes, what their JSON
logs say, a steady load, and polling a condition with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from invariants import FirstSeen
from pool_helpers import WorkerProcess

from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest

POLL_S = 0.05


def model_spec(factory: str = "recording_echo") -> str:
    return f"echo=testing_models:{factory}"


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str
) -> float:
    """Poll ``condition`` every 50 ms until it holds; the seconds it took. Fails the test
    with ``what`` after ``timeout_s``."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(POLL_S)


def named(worker: WorkerProcess, name: str, after: int = 0) -> list[dict[str, Any]]:
    return [event for event in worker.events()[after:] if event.get("event") == name]


def event_time(event: dict[str, Any]) -> float:
    """The event's timestamp, Unix epoch seconds."""
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def assignment(worker: WorkerProcess) -> set[int] | None:
    """The partitions the worker holds now, by its log: None before its first assignment."""
    held: set[int] | None = None
    for event in worker.events():
        if event.get("event") == "rebalance.assigned":
            held = {partition for _topic, partition in event["partitions"]}
        elif event.get("event") == "rebalance.revoked":
            held = set()
    return held


def worker_id(worker: WorkerProcess) -> str:
    return str(named(worker, "worker.started")[0]["worker"])


def metrics_port(worker: WorkerProcess) -> int:
    return int(named(worker, "health.listening")[0]["port"])


async def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics samples without labels, by name."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        body = (await asyncio.wait_for(reader.read(), 10)).decode()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    samples: dict[str, float] = {}
    for line in body.split("\r\n\r\n", 1)[-1].splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            samples[name] = float(value)
    return samples


class Fleet:
    """The test's worker processes, sharing one call log; all killed at the end."""

    def __init__(self, settings: InferpoolSettings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.call_log = workdir / "calls.jsonl"
        self.workers: list[WorkerProcess] = []

    def spawn(
        self,
        name: str,
        factory: str = "recording_echo",
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        worker = WorkerProcess(self.settings, self.workdir, name, model_spec(factory), env)
        worker.start()
        self.workers.append(worker)
        return worker

    async def start(
        self,
        names: list[str],
        factory: str = "recording_echo",
        env: dict[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> list[WorkerProcess]:
        """Spawn workers and wait until the group has settled: every live worker of the
        fleet holds partitions, and together they hold every partition."""
        workers = [self.spawn(name, factory, env) for name in names]
        await self.settle(timeout_s)
        return workers

    async def settle(self, timeout_s: float = 60.0) -> None:
        """Wait until the live workers share every partition (see ``settled``)."""
        for worker in self.live():
            await worker.wait_for_event("rebalance.assigned", timeout_s)
        await wait_until(self.settled, timeout_s, "the workers to settle their assignment")

    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.process is not None and w.process.poll() is None]

    def settled(self, workers: list[WorkerProcess] | None = None) -> bool:
        """Whether ``workers`` (default: the live ones) each hold partitions, all of them
        together, and no partition twice."""
        held: list[set[int]] = []
        for worker in self.live() if workers is None else workers:
            partitions = assignment(worker)
            if not partitions:
                return False
            held.append(partitions)
        every = set(range(self.settings.request_topic_partitions))
        return bool(held) and set().union(*held) == every and sum(map(len, held)) == len(every)

    def kill_all(self) -> None:
        for worker in self.workers:
            assert worker.process is not None
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGCONT)  # a frozen worker dies too
            worker.kill()

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for worker in self.workers:
            text = [
                line
                for line in worker.log_path.read_text(errors="replace").splitlines()
                if '"batch.done"' not in line
            ][-lines:]
            parts.append(f"----- {worker.name} (last {lines} lines but batches) -----")
            parts.extend(text)
        return "\n".join(parts)


class Load:
    """Submits requests with unique string inputs (``<tag>-<n>``), either in bursts or at a
    steady, bounded rate from a background task, and tells the watcher to expect them."""

    def __init__(
        self,
        producer: Producer,
        watcher: FirstSeen,
        tag: str = "r",
        per_tick: int = 10,
        tick_s: float = 0.05,
    ) -> None:
        self._producer = producer
        self._watcher = watcher
        self._tag = tag
        self._numbers = itertools.count()
        self._per_tick = per_tick
        self._tick_s = tick_s
        self.sent: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.acknowledged_at = time.monotonic()

    async def burst(self, count: int) -> list[str]:
        inputs = [f"{self._tag}-{next(self._numbers)}" for _ in range(count)]
        ids = await self._producer.submit_many(SubmitRequest("echo", value) for value in inputs)
        self.sent.update(zip(ids, inputs, strict=True))
        self._watcher.expect(ids)
        self.acknowledged_at = time.monotonic()
        return ids

    async def send_one(self, value: str) -> str:
        """One request whose input is ``value`` (not of the ``<tag>-<n>`` series)."""
        request_id = await self._producer.submit("echo", value)
        self.sent[request_id] = value
        self._watcher.expect([request_id])
        return request_id

    def stalled_for(self) -> float:
        """Seconds since the broker last acknowledged a burst."""
        return time.monotonic() - self.acknowledged_at

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._steady())

    async def _steady(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while not self._stopping.is_set():
            await self.burst(self._per_tick)
            next_tick += self._tick_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, next_tick - loop.time()))

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the steady load after the burst in progress (so that every request it
        published is in ``sent``); raises what made it fail, if anything did."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        await asyncio.wait_for(task, timeout_s)

    async def until(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait for ``condition`` while the steady load runs, failing early if it broke."""

        def check() -> bool:
            if self._task is not None and self._task.done():
                self._task.result()
            return condition()

        await wait_until(check, timeout_s, what)


def using_redis(settings: InferpoolSettings, url: str) -> InferpoolSettings:
    return settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": url})})


def using_broker(settings: InferpoolSettings, bootstrap_servers: str) -> InferpoolSettings:
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
    return settings.model_copy(update={"kafka": kafka})
