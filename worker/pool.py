"""Worker: one member of the pool's consumer group, assembled from its stages.

    RequestConsumer -> Admission (intake, preparation) -> Engine (batches, model) -> Settlement
          ^                  | rejections ------------------------------------^      |
          +-- Committer <-- OffsetTracker <--------------- answered ------------------+

The worker wires the stages together and holds no logic of its own. While started, these
tasks run: admission's fetch loop, each engine's loop, the commit loop. Shutdown order
(``stop()``, called by the entry point on SIGTERM): stop fetching; settle the rejections
in hand; drain every engine (whatever is queued runs now); commit; leave the group; close
the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import Counter
from typing import Any

from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from inferpool.protocol import Priority, ResultKeys, lane_topics, now_ms
from inferpool.settings import InferpoolSettings
from inferpool.topics import ensure_topics
from results.redis_store import RedisResultStore
from results.store import ResultStore
from worker.admission.admission import Admission
from worker.admission.intake import Intake
from worker.admission.lane_gate import LaneGate
from worker.admission.preparation import Preparation
from worker.admission.rate_limits import TenantRateLimits
from worker.answers import Answers
from worker.consumer import RequestConsumer
from worker.engine import Engine
from worker.execution.batch_engine import BatchEngine
from worker.execution.batcher import Batcher
from worker.execution.poison import PoisonScreen
from worker.execution.service_order import OrderPolicy
from worker.execution.step_engine import StepEngine
from worker.health import HealthServer
from worker.load_reporter import LoadReporter
from worker.metrics import WorkerMetrics
from worker.models.config import model_configs
from worker.models.generative.model import GenerativeModel
from worker.models.registry import ModelRegistry
from worker.offsets import OffsetTracker, TopicPartition
from worker.rebalance import Rebalance
from worker.result_sink import ResultSink
from worker.settlement.commits import Committer
from worker.settlement.dead_letter import DeadLetterSink
from worker.settlement.settlement import Settlement

log = get_logger("worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker(Service):
    def __init__(
        self,
        settings: InferpoolSettings,
        registry: ModelRegistry | None = None,
        store: ResultStore | None = None,
    ) -> None:
        self.settings = settings
        self.id = settings.worker_id or default_worker_id()
        self.registry = registry
        self.failed: BaseException | None = None
        self.closed = asyncio.Event()  # set when a loop died: the entry point should stop
        self.metrics = WorkerMetrics()
        self._store = store
        self._tracker = OffsetTracker()
        self._engines: list[Engine] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()

    @property
    def assigned(self) -> asyncio.Event:
        """Set once the group gave this worker partitions."""
        return self._rebalance.assigned

    # --- lifecycle ----------------------------------------------------------------------

    async def _start(self) -> None:
        try:
            await self._assemble()
        except BaseException:
            await self._stack.aclose()
            raise
        self.metrics.watch(
            inflight=self._tracker.unanswered,
            oldest_age=self._oldest_age_s,
            ready=self.ready,
            lag=self._admission.lag,
        )
        loops = [
            ("fetch", self._admission.run()),
            *((f"engine-{i}", engine.run()) for i, engine in enumerate(self._engines)),
            ("commit", self._committer.run()),
        ]
        for name, loop in loops:
            task = asyncio.create_task(loop, name=f"inferpool-{name}")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        log.info("worker.started", worker=self.id, topics=self._topics,
                 group=self.settings.consumer_group, models=self._registry().names())

    async def _assemble(self) -> None:
        settings, stack = self.settings, self._stack
        self.health = await stack.enter_async_context(HealthServer(
            settings.metrics_host, settings.metrics_port, self.metrics.exposition,
            alive=lambda: self.failed is None, ready=self.ready,
        ))
        if self.registry is None:
            configs = model_configs(settings.models, settings.models_file)
            self.registry = await asyncio.to_thread(ModelRegistry.from_configs, configs)
        registry = self.registry
        self._topics = sorted({
            topic for name in registry.names() for topic in lane_topics(settings.topic_for(name))
        })
        if settings.create_topics:
            await ensure_topics(settings.kafka, [*self._topics, settings.dead_letter_topic],
                                settings.request_topic_partitions,
                                settings.request_topic_replication)
        store = self._store or RedisResultStore(
            settings.redis, ResultKeys(settings.result_key_prefix), settings.result_ttl_s
        )
        sink = ResultSink(await stack.enter_async_context(store),
                          on_retry=self.metrics.store_retries.inc)
        await sink.check_access()
        dead_letters = await stack.enter_async_context(DeadLetterSink(
            settings.kafka, settings.dead_letter_topic, self.metrics.dead_letter_retries.inc,
            lambda reason, count: self.metrics.dead_letter_failures.labels(reason).inc(count),
            timeout_s=settings.dead_letter_timeout_ms / 1000,
        ))
        settlement = Settlement(sink, dead_letters, self._tracker, self.metrics, self._task_done)
        answers = Answers(self.id)
        self._engines = await self._build_engines(registry, sink, settlement, answers)
        for each in self._engines:
            await each.warm_up()
        for model in registry:
            self.metrics.model_loaded(model)
        preparing: Counter[TopicPartition] = Counter()  # admission counts, rebalances read
        consumer = await stack.enter_async_context(RequestConsumer(
            settings, self._topics, lambda error: self.metrics.fetch_errors.labels(error).inc()
        ))
        self._committer = Committer(consumer, self._tracker, self.metrics,
                                    settings.commit_interval_ms)
        self._rebalance = Rebalance(self.id, self._tracker, self._engines, self._committer,
                                    preparing, settings.drain_timeout_s)
        preparation = await stack.enter_async_context(
            Preparation(registry, settings.stage_timeout_s)
        )
        by_model = {name: e for e in self._engines for name in e.models}
        self._admission = Admission(
            consumer, self._tracker, Intake(registry, settings.max_request_bytes), preparation,
            by_model, settlement, sink, answers, preparing, settings.max_inflight_requests,
            settings.max_inflight_bytes, settings.max_attempts,
            lane_gate=LaneGate(self._tracker, settings.max_inflight_requests, {
                Priority.NORMAL: settings.lane_share_normal, Priority.LOW: settings.lane_share_low,
            }),
            rate_limits=TenantRateLimits(settings.tenant_rate_limits),
        )
        self._settlement = settlement
        await stack.enter_async_context(LoadReporter(
            self.id, {name: settings.topic_for(name) for name in registry.names()},
            self._admission.backlog, self.metrics.service_rates, sink,
            settings.load_report_interval_ms / 1000,
        ))
        consumer.subscribe(self._rebalance.on_assigned, self._rebalance.on_revoked)

    async def _build_engines(
        self, registry: ModelRegistry, sink: ResultSink, settlement: Settlement, answers: Answers
    ) -> list[Engine]:
        """One BatchEngine for the one-forward models, one StepEngine per generative model."""
        settings, stack = self.settings, self._stack
        poison = PoisonScreen(sink, settings.max_attempts)
        one_shot = [m for m in registry if not isinstance(m, GenerativeModel)]
        engines: list[Engine] = []
        if one_shot:
            order = OrderPolicy(settings.lane_aging_ms / 1000, settings.tenant_shares)
            batches = Batcher(settings.max_batch_size, settings.max_wait_ms / 1000,
                              registry.limits(settings.max_batch_size), order=order)
            engines.append(await stack.enter_async_context(BatchEngine(
                ModelRegistry(one_shot), batches, poison, settlement, answers, self.metrics,
                settings.stage_timeout_s,
            )))
        for model in registry:
            if isinstance(model, GenerativeModel):
                engines.append(await stack.enter_async_context(StepEngine(
                    model, poison, settlement, settlement, answers, self.metrics,
                )))
        return engines

    def _registry(self) -> ModelRegistry:
        assert self.registry is not None
        return self.registry

    async def _stop(self) -> None:
        log.info("worker.draining", worker=self.id, queued=self._queued())
        self._admission.stop_fetching()
        try:
            await asyncio.wait_for(self._finish(), self.settings.drain_timeout_s)
        except TimeoutError:
            log.warning("worker.drain_timeout", worker=self.id, queued=self._queued())
        leftovers = [*self._tasks, *self._settlement.cancel_background()]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        await self._committer.commit()
        await self._stack.aclose()
        log.info("worker.stopped", worker=self.id)

    async def _finish(self) -> None:
        fetching, *engines, _commits = self._tasks
        await asyncio.gather(fetching, return_exceptions=True)
        await self._settlement.settled_in_background()
        for engine in self._engines:
            engine.drain()
        await asyncio.gather(*engines, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.failed = task.exception()
        log.error("worker.task_failed", task=task.get_name(), error=repr(self.failed))
        self.closed.set()

    # --- introspection (health, metrics, tests) -----------------------------------------

    def ready(self) -> bool:
        """Models warmed up, the group joined, not draining, nothing failed."""
        return (
            self.started
            and self.assigned.is_set()
            and self._admission.fetching
            and self.failed is None
        )

    def _queued(self) -> int:
        return sum(engine.queued() for engine in self._engines)

    def _oldest_age_s(self) -> float:
        times = [t for e in self._engines if (t := e.oldest_submitted_ms()) is not None]
        return max(0.0, (now_ms() - min(times)) / 1000) if times else 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "queued": self._queued(),
            "unanswered": self._tracker.unanswered(),
            "assigned": [list(p) for p in self._tracker.assigned()],
        }


__all__ = ["Worker", "default_worker_id"]
