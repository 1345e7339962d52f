"""Stand-ins for the worker stages' outside world (Kafka consumer, dead-letter topic), and a
kit that assembles the real stages around the in-memory result store, for unit tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka_stubs import Record

from inferpool.protocol import RequestEnvelope, ResultRecord
from inferpool.protocol.wire import Encoding, pack_msgpack
from results import InMemoryResultStore
from worker.admission.admission import Admission
from worker.admission.intake import Intake
from worker.admission.preparation import Preparation
from worker.admission.rate_limits import TenantRateLimits
from worker.answers import Answers
from worker.execution.batch_engine import BatchEngine
from worker.execution.batcher import Batcher
from worker.execution.poison import PoisonScreen
from worker.metrics import WorkerMetrics
from worker.models.base import Model
from worker.models.registry import ModelRegistry
from worker.offsets import OffsetTracker, TopicPartition
from worker.rebalance import Rebalance
from worker.request import PendingRequest, Rejection
from worker.result_sink import ResultSink
from worker.settlement.commits import Committer
from worker.settlement.settlement import Settlement

PARTITION = TopicPartition("requests", 0)


@dataclass
class FakeConsumer:
    """Hands out queued records as fetches; records pauses and commits."""

    pending: list[Record] = field(default_factory=list)
    paused: bool = False
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    fetches: int = 0
    fail_commits: bool = False
    per_fetch: int = 1 << 30  # at most this many records per fetch
    #: fetches wait for ever, as aiokafka's do while the group rebalances (set: inside one)
    stuck: bool = False
    inside_stuck_fetch: asyncio.Event = field(default_factory=asyncio.Event)

    async def fetch(
        self, timeout_ms: int, max_records: int, partitions: list[TopicPartition] | None = None
    ) -> list[Any]:
        self.fetches += 1
        if self.stuck:
            self.inside_stuck_fetch.set()
            await asyncio.Event().wait()
        if self.paused or not self.pending or partitions == []:
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
            return []
        count = min(max_records, self.per_fetch)
        taken, self.pending = self.pending[:count], self.pending[count:]
        return taken

    def pause_all(self) -> None:
        self.paused = True

    def resume_all(self) -> None:
        self.paused = False

    def highwaters(self) -> dict[TopicPartition, int]:
        return {PARTITION: 0}

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        if self.fail_commits:
            return False
        self.commits.append(dict(offsets))
        return True


@dataclass
class FakeDeadLetters:
    sent: list[Rejection] = field(default_factory=list)

    def submit(self, rejections: Sequence[Rejection]) -> None:
        self.sent.extend(rejections)


def request_record(request_id: str, inputs: Any = None, model: str = "echo", offset: int = 0,
                   **fields: Any) -> Record:
    envelope = RequestEnvelope(id=request_id, model=model, inputs=inputs, **fields)
    return Record(envelope.encode(), key=request_id.encode(), offset=offset)


def records(count: int, model: str = "echo", start: int = 0) -> list[Record]:
    return [request_record(f"r{i}", i, model, offset=i) for i in range(start, start + count)]


def raw_record(value: bytes | None, key: bytes | None, offset: int) -> Record:
    return Record(value, key=key, offset=offset)


def packed(fields: dict[str, Any]) -> bytes:
    return pack_msgpack(fields)


class StageKit:
    """The real stages of one worker, with an in-memory store and fake Kafka ends."""

    def __init__(self, *models: Model, max_batch_size: int = 8, max_wait_s: float = 0.005,
                 max_inflight_requests: int = 1024, max_inflight_bytes: int = 1 << 30,
                 max_attempts: int = 3,
                 tenant_rate_limits: dict[str, float] | None = None) -> None:
        self.registry = ModelRegistry(models)
        self.store = InMemoryResultStore()
        self.tracker = OffsetTracker()
        self.tracker.assign([PARTITION])
        self.metrics = WorkerMetrics()
        self.consumer = FakeConsumer()
        self.dead_letters = FakeDeadLetters()
        self.failures: list[BaseException] = []
        self.sink = ResultSink(self.store, on_retry=self.metrics.store_retries.inc)
        self.settlement = Settlement(self.sink, self.dead_letters, self.tracker, self.metrics,
                                     self._failed)
        self.answers = Answers("w-test")
        self.engine = BatchEngine(
            self.registry, Batcher(max_batch_size, max_wait_s),
            PoisonScreen(self.sink, max_attempts), self.settlement, self.answers, self.metrics,
        )
        self.preparing: Counter[TopicPartition] = Counter()
        self.committer = Committer(self.consumer, self.tracker, self.metrics, 10)
        self.rebalance = Rebalance("w-test", self.tracker, [self.engine], self.committer,
                                   self.preparing, drain_timeout_s=5)
        self.preparation = Preparation(self.registry)
        self.admission = Admission(
            self.consumer, self.tracker, Intake(self.registry, 1 << 20), self.preparation,
            {name: self.engine for name in self.registry.names()}, self.settlement, self.sink,
            self.answers, self.preparing, max_inflight_requests, max_inflight_bytes,
            max_attempts, rate_limits=TenantRateLimits(tenant_rate_limits or {}),
        )

    def _failed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def running(self, fetching: bool = True) -> AsyncIterator[StageKit]:
        """Store, engine and preparation started; the engine's loop (and admission's fetch
        loop, if ``fetching``) running; drained and stopped afterwards."""
        async with self.store, self.engine, self.preparation:
            loops = [asyncio.create_task(self.engine.run())]
            if fetching:
                loops.append(asyncio.create_task(self.admission.run()))
            try:
                yield self
            finally:
                self.admission.stop_fetching()
                await asyncio.gather(*loops[1:], return_exceptions=True)
                await self.settlement.settled_in_background()
                self.engine.drain()
                await asyncio.wait_for(loops[0], 10)
        assert not self.failures, self.failures

    async def results(self, ids: Sequence[str], timeout_s: float = 5) -> dict[str, ResultRecord]:
        return {r.id: r async for r in self.store.wait_many(ids, timeout_s)}


def pending(kit: StageKit, request_id: str, inputs: Any = None, model: str = "echo",
            offset: int = 0, deadline_monotonic: float | None = None,
            fetched_monotonic: float | None = None) -> PendingRequest:
    """A request as admission would hand it over (tracked in the kit's tracker)."""
    record = request_record(request_id, inputs, model, offset)
    token = kit.tracker.track(PARTITION, offset, len(record.value or b""))
    fetched = time.monotonic() if fetched_monotonic is None else fetched_monotonic
    return PendingRequest(
        RequestEnvelope(id=request_id, model=model, inputs=inputs), inputs, token,
        Encoding.MSGPACK, fetched, 0, deadline_monotonic, record=record,
    )
