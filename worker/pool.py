"""Worker: one member of the pool's consumer group. Wires the helpers together:

    RequestConsumer --records--> Intake --PendingRequest--> Batcher --Batch--> ModelRunner
          ^                        | Rejection                                  |
          |                        v                                            v
    OffsetTracker <--answered-- ResultSink (Redis) + DeadLetterSink <----- Answers

Three tasks run while started: fetching, batching, committing. Shutdown order (``stop()``,
called by the entry point on SIGTERM): stop fetching; close every queued request into a
batch and run it; store the results; commit; leave the group; close the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from inferpool.errors import BrokerUnavailable
from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from inferpool.protocol import ResultKeys, now_ms
from inferpool.settings import InferpoolSettings
from inferpool.topics import ensure_topics
from results.writer import ResultWriter
from worker.answers import Answers
from worker.batcher import Batch, Batcher
from worker.consumer import RequestConsumer
from worker.dead_letter import DeadLetterSink
from worker.health import HealthServer
from worker.intake import Intake, Rejection
from worker.metrics import WorkerMetrics
from worker.models.base import Model, has_hook
from worker.models.config import model_configs
from worker.models.registry import ModelRegistry
from worker.offsets import OffsetToken, OffsetTracker, TopicPartition
from worker.poison import PoisonScreen
from worker.preparation import prepare
from worker.request import KafkaRecord, PendingRequest
from worker.result_sink import ResultSink
from worker.runner import ModelRunner

log = get_logger("worker")

FETCH_TIMEOUT_MS = 100
MAX_FETCH_RECORDS = 2000
MAX_BATCHES_IN_FLIGHT = 2
BACKPRESSURE_POLL_S = 1.0
MAX_COMMIT_BACKOFF_S = 5.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker(Service):
    def __init__(self, settings: InferpoolSettings, registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.id = settings.worker_id or default_worker_id()
        self.registry = registry
        self.assigned = asyncio.Event()  # set once the group gave this worker partitions
        self.failed: BaseException | None = None
        self.closed = asyncio.Event()  # set when a loop died: the entry point should stop
        self.metrics = WorkerMetrics()
        self._tracker = OffsetTracker()
        self._batcher = Batcher(settings.max_batch_size, settings.max_wait_ms / 1000)
        self._answers = Answers(self.id)
        self._arrived = asyncio.Event()
        self._room_freed = asyncio.Event()
        self._in_flight: Counter[TopicPartition] = Counter()  # taken out of the batcher
        self._settled = asyncio.Condition()
        self._commit_lock = asyncio.Lock()
        self._fetching = True
        self._draining = False
        self._tasks: list[asyncio.Task[None]] = []
        self._answering: set[asyncio.Task[None]] = set()  # rejections and expiries
        self._stack = contextlib.AsyncExitStack()

    # --- lifecycle ----------------------------------------------------------------------

    async def _start(self) -> None:
        settings = self.settings
        try:
            self.health = await self._stack.enter_async_context(
                HealthServer(
                    settings.metrics_host,
                    settings.metrics_port,
                    self.metrics.exposition,
                    alive=lambda: self.failed is None,
                    ready=self.ready,
                )
            )
            if self.registry is None:
                configs = model_configs(settings.models, settings.models_file)
                self.registry = await asyncio.to_thread(ModelRegistry.from_configs, configs)
            self._batcher = Batcher(
                settings.max_batch_size,
                settings.max_wait_ms / 1000,
                self.registry.limits(settings.max_batch_size),
            )
            topics = sorted({settings.topic_for(name) for name in self.registry.names()})
            if settings.create_topics:
                await ensure_topics(
                    settings.kafka,
                    [*topics, settings.dead_letter_topic],
                    settings.request_topic_partitions,
                    settings.request_topic_replication,
                )
            self._intake = Intake(self.registry, settings.max_request_bytes)
            writer = ResultWriter(
                settings.redis, ResultKeys(settings.result_key_prefix), settings.result_ttl_s
            )
            self._sink = ResultSink(
                await self._stack.enter_async_context(writer),
                on_retry=self.metrics.store_retries.inc,
            )
            self._poison_screen = PoisonScreen(self._sink, settings.max_attempts)
            self._dead_letters = await self._stack.enter_async_context(
                DeadLetterSink(settings.kafka, settings.dead_letter_topic)
            )
            self._runner = await self._stack.enter_async_context(ModelRunner())
            await self._warm_up(self.registry)
            for model in self.registry:
                self.metrics.model_loaded(model)
            self._consumer = await self._stack.enter_async_context(
                RequestConsumer(settings, topics, self._on_assigned, self._on_revoked)
            )
        except BaseException:
            await self._stack.aclose()
            raise
        self.metrics.watch(
            inflight=self._tracker.unanswered,
            oldest_age=self._oldest_age_s,
            ready=self.ready,
            lag=self._lag,
        )
        for loop in (self._fetch_loop, self._batch_loop, self._commit_loop):
            task = asyncio.create_task(loop(), name=f"inferpool-{loop.__name__.strip('_')}")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        log.info(
            "worker.started",
            worker=self.id,
            topics=topics,
            group=settings.consumer_group,
            models=self.registry.names(),
        )

    async def _warm_up(self, registry: ModelRegistry) -> None:
        """Every model sees every batch-size bucket before the worker joins its group."""
        for model in registry:
            if has_hook(model, "warmup"):
                seconds = await self._runner.warm_up(model)
                log.info(
                    "model.warmed_up", worker=self.id, model=model.name, seconds=round(seconds, 3)
                )

    async def _stop(self) -> None:
        log.info("worker.draining", worker=self.id, queued=len(self._batcher))
        fetch, batch, _commit = self._tasks
        self._fetching = False
        try:
            await asyncio.wait_for(self._finish(fetch, batch), self.settings.drain_timeout_s)
        except TimeoutError:
            log.warning("worker.drain_timeout", worker=self.id, queued=len(self._batcher))
        for task in [*self._tasks, *self._answering]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._answering, return_exceptions=True)
        await self._commit()
        await self._stack.aclose()
        log.info("worker.stopped", worker=self.id)

    async def _finish(self, fetch: asyncio.Task[None], batch: asyncio.Task[None]) -> None:
        await asyncio.gather(fetch, return_exceptions=True)
        await asyncio.gather(*self._answering, return_exceptions=True)
        self._draining = True
        self._arrived.set()
        await asyncio.gather(batch, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.failed = task.exception()
        log.error("worker.task_failed", task=task.get_name(), error=repr(self.failed))
        self.closed.set()

    # --- rebalance ----------------------------------------------------------------------

    async def _on_assigned(self, partitions: list[TopicPartition]) -> None:
        self._tracker.assign(partitions)
        log.info("rebalance.assigned", worker=self.id, partitions=[list(p) for p in partitions])
        self.assigned.set()

    async def _on_revoked(self, partitions: list[TopicPartition]) -> None:
        revoked = set(partitions)
        dropped = self._batcher.discard(lambda request: request.token.partition in revoked)
        try:
            async with self._settled:
                await asyncio.wait_for(
                    self._settled.wait_for(lambda: not any(self._in_flight[p] for p in revoked)),
                    self.settings.drain_timeout_s,
                )
        except TimeoutError:
            log.warning("rebalance.in_flight_abandoned", worker=self.id)
        await self._commit(partitions)
        self._tracker.revoke(partitions)
        log.info(
            "rebalance.revoked",
            worker=self.id,
            partitions=[list(p) for p in partitions],
            left_for_next_owner=len(dropped),
        )

    # --- fetching -----------------------------------------------------------------------

    def _room(self) -> int:
        """How many more records may be fetched before the in-flight limit."""
        return self.settings.max_inflight_requests - self._tracker.unanswered()

    async def _fetch_loop(self) -> None:
        paused = False
        while self._fetching:
            room = self._room()
            if room <= 0:
                # Back-pressure: wait for answers to free room. Partitions are paused and
                # the consumer still polls now and then, so the group keeps this member.
                if not paused:
                    self._consumer.pause_all()
                    paused = True
                self._room_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room_freed.wait(), BACKPRESSURE_POLL_S)
                if self._room() <= 0:
                    await self._consumer.fetch(0, 1)
                continue
            if paused:
                self._consumer.resume_all()
                paused = False
            records = await self._consumer.fetch(FETCH_TIMEOUT_MS, min(room, MAX_FETCH_RECORDS))
            if records:
                await self._admit(records)

    async def _admit(self, records: Sequence[KafkaRecord]) -> None:
        now_monotonic, wall_ms = time.monotonic(), now_ms()
        rejections: list[Rejection] = []
        expired: list[PendingRequest] = []
        admitted: list[PendingRequest] = []
        for record in records:
            token = self._tracker.track(
                TopicPartition(record.topic, record.partition), record.offset
            )
            outcome = self._intake.admit(record, token, now_monotonic, wall_ms)
            if isinstance(outcome, Rejection):
                rejections.append(outcome)
            elif outcome.expired(now_monotonic):
                expired.append(outcome)
            else:
                admitted.append(outcome)
        if admitted:
            assert self.registry is not None
            admitted, unprepared = await prepare(self._runner, self.registry, admitted)
            rejections += unprepared
            # a rebalance during preparation: the partition's next owner runs these
            admitted = [r for r in admitted if self._tracker.is_current(r.token)]
        for request in admitted:
            self._batcher.add(request)
        if admitted:
            self._arrived.set()
            await self._sink.mark_accepted([request.id for request in admitted])
        if rejections or expired:
            # answered in the background: a Redis outage must not stop the fetch loop
            # (the consumer would miss max_poll_interval_ms and leave its group)
            answering = asyncio.create_task(self._answer_at_once(rejections, expired))
            self._answering.add(answering)
            answering.add_done_callback(self._answering.discard)
            answering.add_done_callback(self._task_done)

    async def _answer_at_once(
        self, rejections: list[Rejection], expired: list[PendingRequest]
    ) -> None:
        tokens = [r.token for r in rejections] + [r.token for r in expired]
        async with self._holding(tokens):
            await self._send_dead_letters(rejections)
            results = [(self._answers.rejected(r), r.encoding) for r in rejections if r.request_id]
            results += [(self._answers.expired(r), r.encoding) for r in expired]
            await self._sink.store(results)
        self.metrics.answered(record for record, _ in results)
        for rejection in rejections:
            self.metrics.dead_letters.labels(rejection.error.code).inc()
            log.info(
                "request.rejected",
                request_id=rejection.request_id,
                trace=rejection.traceparent,
                code=rejection.error.code,
                error=str(rejection.error),
                partition=rejection.record.partition,
                offset=rejection.record.offset,
            )
        if expired:
            log.info("request.expired", request_ids=[r.id for r in expired])

    async def _send_dead_letters(self, rejections: list[Rejection]) -> None:
        backoff = 0.05
        while rejections:
            try:
                await self._dead_letters.send(rejections)
                return
            except BrokerUnavailable as error:
                log.warning("dead_letter.retry", error=str(error), backoff_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    # --- batching -----------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        """Close batches as they fall due and run up to MAX_BATCHES_IN_FLIGHT at once: while
        one computes in the model thread, the next is collated and the previous stored."""
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._arrived.clear()
                now = time.monotonic()
                room = len(running) < MAX_BATCHES_IN_FLIGHT
                batch = self._batcher.take(now, drain=self._draining) if room else None
                if batch is not None:
                    running.add(asyncio.create_task(self._run(batch)))
                    continue
                if self._draining and not running and not len(self._batcher):
                    return
                await self._wait_for_work(running, self._batcher.next_due() if room else None)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _wait_for_work(self, running: set[asyncio.Task[None]], due: float | None) -> None:
        """Until a request arrives, the next batch falls due, or a running batch ends."""
        arrival = asyncio.ensure_future(self._arrived.wait())
        timeout = None if due is None else max(0.0, due - time.monotonic())
        try:
            done, _ = await asyncio.wait(
                {arrival, *running}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            arrival.cancel()
        for task in done & running:
            running.discard(task)
            task.result()  # a batch that failed unexpectedly fails the loop, loudly

    async def _run(self, batch: Batch) -> None:
        assert self.registry is not None
        model = self.registry.get(batch.model)
        async with self._holding([r.token for r in batch.requests + batch.expired]):
            screened = await self._poison_screen.screen(batch.requests)
            fresh, suspects, poison = screened.fresh, screened.suspects, screened.poison
            for rejection in poison:
                self.metrics.dead_letters.labels(rejection.error.code).inc()
            # A request that was running when a worker died runs alone, its result stored at
            # once: if it kills this worker too, its neighbours are not blamed for it.
            if fresh:
                await self._run_group(model, fresh, batch.reason.value)
            for suspect in suspects:
                await self._poison_screen.before_alone(suspect)
                await self._run_group(model, [suspect], batch.reason.value)
            if poison:
                await self._send_dead_letters(poison)
            results = [(self._answers.rejected(r), r.encoding) for r in poison]
            results += [(self._answers.expired(r), r.encoding) for r in batch.expired]
            await self._sink.store(results)
        self.metrics.answered(record for record, _ in results)
        log.info(
            "batch.done",
            worker=self.id,
            batch_id=batch.id,
            model=model.name,
            size=len(batch.requests),
            expired=len(batch.expired),
            poison=len(poison),
            reason=batch.reason.value,
            request_ids=[r.id for r in batch.requests],
            traces=[r.traceparent for r in batch.requests if r.traceparent] or None,
        )

    async def _run_group(self, model: Model, group: list[PendingRequest], reason: str) -> None:
        started = time.monotonic()
        outcome = await self._runner.run(model, [r.item for r in group])
        self._batcher.observe(model.name, outcome.seconds)
        results = [
            (
                self._answers.for_output(r, model, output, len(group), started, outcome.seconds),
                r.encoding,
            )
            for r, output in zip(group, outcome.outputs, strict=True)
        ]
        await self._sink.store(results)
        self.metrics.answered(record for record, _ in results)
        self.metrics.batch_ran(
            model.name,
            len(group),
            reason,
            outcome.seconds,
            (started - r.fetched_monotonic for r in group),
        )

    @contextlib.asynccontextmanager
    async def _holding(self, tokens: Iterable[OffsetToken]) -> AsyncIterator[None]:
        """Count tokens as in flight while their results are computed and stored; once
        stored, answer them in the tracker (their offsets may be committed)."""
        held = list(tokens)
        for token in held:
            self._in_flight[token.partition] += 1
        stored = False
        try:
            yield
            stored = True
        finally:
            for token in held:
                self._in_flight[token.partition] -= 1
                if stored:
                    self._tracker.answer(token)
            if self._room() > 0:
                self._room_freed.set()
            async with self._settled:
                self._settled.notify_all()

    # --- committing ---------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        """Commit every interval; after a failure (a rebalance, the broker away) wait twice as
        long each time, up to MAX_COMMIT_BACKOFF_S, instead of retrying in a storm."""
        interval = max(self.settings.commit_interval_ms / 1000, 0.01)
        wait = interval
        while True:
            await asyncio.sleep(wait)
            committed = await self._commit()
            wait = interval if committed else min(wait * 2, MAX_COMMIT_BACKOFF_S)

    async def _commit(self, partitions: list[TopicPartition] | None = None) -> bool:
        """Commit what is answered; False if the commit failed (it is logged and counted)."""
        async with self._commit_lock:
            offsets = self._tracker.committable(partitions)
            if not offsets:
                return True
            if await self._consumer.commit(offsets):
                self._tracker.committed(offsets)
                return True
            self.metrics.commit_failures.inc()
            return False

    # --- introspection (health, metrics, tests) -----------------------------------------

    def ready(self) -> bool:
        """Models warmed up, the group joined, not draining, nothing failed."""
        return (
            self.started
            and self.assigned.is_set()
            and not self._draining
            and self._fetching
            and self.failed is None
        )

    def _oldest_age_s(self) -> float:
        oldest = self._batcher.oldest_submitted_ms()
        return max(0.0, (now_ms() - oldest) / 1000) if oldest else 0.0

    def _lag(self) -> dict[tuple[str, int], int]:
        lag: dict[tuple[str, int], int] = {}
        for partition, end in self._consumer.highwaters().items():
            position = self._tracker.position(partition)
            if position is not None:
                lag[(partition.topic, partition.partition)] = max(0, end - position)
        return lag

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self._batcher),
            "unanswered": self._tracker.unanswered(),
            "assigned": [list(p) for p in self._tracker.assigned()],
        }


__all__ = ["Worker", "default_worker_id"]
