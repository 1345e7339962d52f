"""BatchEngine: the one-shot execution mode. Requests of a model are formed into batches
(``Batcher``), screened for poison, and run once each through the model (``ModelRunner``):
one forward per batch, one answer per request.

The model is *busy* from the moment a batch closes until its forward ends (screening, the
wait for the model thread, the forward itself). Up to MODEL_BATCHES batches are busy at
once (one computes while the next is screened and waits), and up to
MAX_BATCHES_IN_FLIGHT in all: a batch whose forward has ended is stored while the model
already runs the next, so the model never waits on the store. While the model is busy the
next batch keeps collecting (``Batcher.take(busy=True)``); it closes when the model is
free again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from worker.answers import Answers
from worker.engine import Settle
from worker.execution.batcher import Batch, Batcher
from worker.execution.poison import PoisonScreen
from worker.execution.runner import ModelRunner
from worker.metrics import WorkerMetrics
from worker.models.base import Model, has_hook
from worker.models.registry import ModelRegistry
from worker.request import Answer, PendingRequest

log = get_logger("worker.batch_engine")

MODEL_BATCHES = 2
MAX_BATCHES_IN_FLIGHT = 4


class BatchEngine(Service):
    def __init__(
        self,
        registry: ModelRegistry,
        batcher: Batcher,
        poison_screen: PoisonScreen,
        settlement: Settle,
        answers: Answers,
        metrics: WorkerMetrics,
        stage_timeout_s: float | None = None,
    ) -> None:
        self._registry = registry
        self._batcher = batcher
        self._poison_screen = poison_screen
        self._settlement = settlement
        self._answers = answers
        self._metrics = metrics
        self._runner = ModelRunner(stage_timeout_s)
        self._arrived = asyncio.Event()
        self._model_freed = asyncio.Event()
        self._at_model = 0  # batches closed whose forward has not ended
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    @property
    def models(self) -> list[str]:
        return self._registry.names()

    async def _start(self) -> None:
        await self._runner.start()

    async def _stop(self) -> None:
        await self._runner.stop()

    async def warm_up(self) -> None:
        for model in self._registry:
            if has_hook(model, "warmup"):
                seconds = await self._runner.warm_up(model)
                log.info("model.warmed_up", worker=self._answers.worker_id, model=model.name,
                         seconds=round(seconds, 3))

    # --- what admission and rebalances call ------------------------------------------------

    def admit(self, requests: Sequence[PendingRequest]) -> None:
        for request in requests:
            self._batcher.add(request)
        if requests:
            self._idle.clear()
            self._arrived.set()

    async def idle(self) -> None:
        await self._idle.wait()

    def discard(self, predicate: Callable[[PendingRequest], bool]) -> list[PendingRequest]:
        return self._batcher.discard(predicate)

    def queued(self) -> int:
        return len(self._batcher)

    def oldest_submitted_ms(self) -> int | None:
        return self._batcher.oldest_submitted_ms()

    def drain(self) -> None:
        self._draining = True
        self._arrived.set()

    # --- the batch loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Close batches as they fall due and run them, MODEL_BATCHES at the model at once.

        While the model is busy the next batch keeps collecting (it closes early only when
        full or when a deadline needs it, and then waits for the model in the pipeline),
        and closes with whatever it holds once the model is free."""
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                if not running and not len(self._batcher):
                    self._idle.set()
                self._arrived.clear()
                self._model_freed.clear()
                now = time.monotonic()
                room = self._at_model < MODEL_BATCHES and len(running) < MAX_BATCHES_IN_FLIGHT
                busy = self._at_model > 0
                batch = (
                    self._batcher.take(now, drain=self._draining, busy=busy) if room else None
                )
                if batch is not None:
                    self._idle.clear()
                    self._at_model += 1
                    running.add(asyncio.create_task(self._run(batch)))
                    continue
                if self._draining and not running and not len(self._batcher):
                    return
                due = self._batcher.next_due(busy) if room else None
                await self._wait_for_work(running, due)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _wait_for_work(self, running: set[asyncio.Task[None]], due: float | None) -> None:
        """Until a request arrives, the next batch falls due, the model is freed, or a
        running batch ends."""
        arrival = asyncio.ensure_future(self._arrived.wait())
        freed = asyncio.ensure_future(self._model_freed.wait())
        timeout = None if due is None else max(0.0, due - time.monotonic())
        try:
            done, _ = await asyncio.wait(
                {arrival, freed, *running}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            arrival.cancel()
            freed.cancel()
        for task in done & running:
            running.discard(task)
            task.result()  # a batch that failed unexpectedly fails the loop, loudly

    async def _run(self, batch: Batch) -> None:
        model = self._registry.get(batch.model)
        try:
            # attempts counted and cancel flags read (a cancelled request never runs)
            screened = await self._poison_screen.screen(batch.requests)
            fresh = await self._run_group(model, screened.fresh, batch.reason.value)
            if screened.suspects:
                # A request that was running when a worker died runs alone, after its
                # neighbours' results are stored: if it kills this worker too, they are
                # not blamed for it; its own result is stored at once.
                await self._settlement.settle(fresh)
                fresh = []
                for suspect in screened.suspects:
                    await self._poison_screen.before_alone(suspect)
                    alone = await self._run_group(model, [suspect], batch.reason.value)
                    await self._settlement.settle(alone)
        finally:
            self._at_model -= 1
            self._model_freed.set()
        answers = fresh + [self._answers.settles_rejected(r) for r in screened.poison]
        answers += [self._answers.settles_expired(r) for r in batch.expired]
        answers += [self._answers.settles_cancelled(r) for r in screened.cancelled]
        await self._settlement.settle(answers)
        log.info(
            "batch.done",
            worker=self._answers.worker_id,
            batch_id=batch.id,
            model=model.name,
            size=len(batch.requests),
            expired=len(batch.expired),
            poison=len(screened.poison),
            reason=batch.reason.value,
            request_ids=[r.id for r in batch.requests],
            traces=[r.traceparent for r in batch.requests if r.traceparent] or None,
        )

    async def _run_group(
        self, model: Model, group: list[PendingRequest], reason: str
    ) -> list[Answer]:
        """One forward over ``group``; the answers, for the caller to settle."""
        if not group:
            return []
        started = time.monotonic()
        outcome = await self._runner.run(model, [r.item for r in group])
        self._batcher.observe(model.name, outcome.seconds)
        self._metrics.batch_ran(
            model.name,
            len(group),
            reason,
            outcome.seconds,
            (started - r.fetched_monotonic for r in group),
        )
        return [
            self._answers.settles_output(r, model, output, len(group), started, outcome.seconds)
            for r, output in zip(group, outcome.outputs, strict=True)
        ]
