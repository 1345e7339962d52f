"""StepEngine: the execution mode of a generative model — continuous batching.

One loop per model. Between two steps it: starts waiting requests while the KV cache has
rows (``Scheduler``; an expired one is answered ``expired``, never run; a poison suspect
runs alone), stops the sequences past their deadline or cancelled (checked every
``CANCEL_POLL_S``), and retires finished ones at once (their result settled in the
background, then their stream's final entry). A step (``run_step``, in the model thread)
decodes every running sequence by one token and prefills a budget of prompt tokens. Tokens
go to the request's Redis stream through the ``StreamPublisher``.

A request is held (its offset unanswered) from ``admit`` until its result is stored, so
admission's back-pressure counts it and a worker that dies mid-generation leaves it to the
partition's next owner, whose run starts its stream over with a restart entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from inferpool.protocol.generation import FinishReason
from results.store import StreamAppend
from worker.answers import Answers
from worker.engine import Settle
from worker.execution.poison import PoisonScreen
from worker.execution.scheduler import Scheduler
from worker.execution.sequence import Sequence as Generation
from worker.execution.step_runner import StepOutcome, run_step
from worker.execution.stream_publisher import StreamPublisher
from worker.metrics import WorkerMetrics
from worker.models.generative.model import GenerativeModel
from worker.models.generative.sampling import new_generator
from worker.models.generative.slot_cache import SlotCache
from worker.request import Answer, PendingRequest

log = get_logger("worker.step_engine")

CANCEL_POLL_S = 0.1  # also how often queued requests are checked for expiry
IDLE_WAKE_S = 0.5


class Publish(Protocol):
    """What the step engine needs besides ``settle``: partial outputs and cancel flags."""

    async def publish(self, appends: Sequence[StreamAppend]) -> list[bool]: ...

    async def cancel_requested(self, request_ids: Sequence[str]) -> list[bool]: ...


class StepEngine(Service):
    def __init__(
        self,
        model: GenerativeModel,
        poison_screen: PoisonScreen,
        settlement: Settle,
        publish: Publish,
        answers: Answers,
        metrics: WorkerMetrics,
    ) -> None:
        self._model = model
        self._poison = poison_screen
        self._settlement = settlement
        self._publish = publish
        self._answers = answers
        self._metrics = metrics.generation
        options = model.options
        self._scheduler = Scheduler(model.cache_rows(), options.prefill_tokens_per_step)
        self._streams = StreamPublisher(
            publish.publish, answers.worker_id, options.stream_tokens,
            options.stream_interval_ms / 1000, self._duplicate,
        )
        self._by_id: dict[str, Generation] = {}
        self._arrived = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued, running or being settled
        self._idle.set()
        self._draining = False
        self._settling: set[asyncio.Task[None]] = set()
        self._thread: ThreadPoolExecutor | None = None
        self._cache: SlotCache | None = None
        self._next_cancel_poll = 0.0

    @property
    def models(self) -> list[str]:
        return [self._model.name]

    async def _start(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"inferpool-{self._model.name}")
        cache = await self._in_thread(self._model.new_cache, self._scheduler.rows)
        assert isinstance(cache, SlotCache)
        self._cache = cache

    async def _stop(self) -> None:
        if self._thread is not None:
            await asyncio.to_thread(self._thread.shutdown, wait=True)

    async def _in_thread(self, function: Callable[..., object], *args: object) -> object:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, function, *args)

    async def warm_up(self) -> None:
        started = time.perf_counter()
        await self._in_thread(self._model.warmup)
        log.info("model.warmed_up", worker=self._answers.worker_id, model=self._model.name,
                 seconds=round(time.perf_counter() - started, 3), rows=self._scheduler.rows)

    # --- what admission and rebalances call ------------------------------------------------

    def admit(self, requests: Sequence[PendingRequest]) -> None:
        self._scheduler.waiting.extend(requests)
        if requests:
            self._idle.clear()
            self._arrived.set()

    async def idle(self) -> None:
        await self._idle.wait()

    def discard(self, predicate: Callable[[PendingRequest], bool]) -> list[PendingRequest]:
        gone = self._scheduler.discard(predicate)
        self._check_idle()
        return gone

    def _check_idle(self) -> None:
        scheduler = self._scheduler
        if not scheduler.running and not scheduler.queued() and not self._settling:
            self._idle.set()

    def queued(self) -> int:
        return self._scheduler.queued()

    def oldest_submitted_ms(self) -> int | None:
        queued = [*self._scheduler.waiting, *self._scheduler.suspects]
        return min((r.envelope.submitted_ms for r in queued), default=None)

    def drain(self) -> None:
        self._draining = True
        self._arrived.set()

    # --- the step loop --------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._streams.run(), name="inferpool-streams")
        watcher = asyncio.create_task(self._watch_cancels(), name="inferpool-cancels")
        try:
            while True:
                self._arrived.clear()
                await self._between_steps()
                if self._scheduler.running:
                    await self._step()
                    continue
                if self._draining and not self._scheduler.queued():
                    break
                self._check_idle()
                await self._wait_for_work()
            await asyncio.gather(*self._settling)
        finally:
            watcher.cancel()
            self._streams.close()
            await asyncio.gather(writer, watcher, return_exceptions=True)
            for task in self._settling:
                task.cancel()

    async def _wait_for_work(self) -> None:
        """Until a request arrives (or a moment passes: settles finish, suspects wait)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), IDLE_WAKE_S)

    async def _between_steps(self) -> None:
        now = time.monotonic()
        await self._start_waiting(now)
        if now >= self._next_cancel_poll:  # every CANCEL_POLL_S
            self._next_cancel_poll = now + CANCEL_POLL_S
            expired = self._scheduler.take_expired(now)
            self._settle_later([self._answers.settles_expired(r) for r in expired], [])
        finished = []
        for sequence in self._scheduler.running:
            if sequence.finish is None and (sequence.duplicate or sequence.cancel_requested):
                sequence.finish = FinishReason.CANCELLED
            elif sequence.finish is None and sequence.request.expired(now):
                sequence.finish = FinishReason.DEADLINE
            if sequence.finish is not None:
                finished.append(sequence)
        self._retire(finished)

    async def _watch_cancels(self) -> None:
        """Every CANCEL_POLL_S, the cancel flags of the running sequences (off the step
        loop: a step never waits on Redis for them)."""
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            ids = list(self._by_id)
            if not ids:
                continue
            flags = await self._publish.cancel_requested(ids)
            for request_id, cancelled in zip(ids, flags, strict=True):
                sequence = self._by_id.get(request_id)
                if cancelled and sequence is not None:
                    sequence.cancel_requested = True
                    self._arrived.set()

    async def _start_waiting(self, now: float) -> None:
        scheduler = self._scheduler
        if scheduler.may_start_suspect():
            suspect = scheduler.suspects.popleft()
            await self._poison.before_alone(suspect)
            self._begin(suspect, alone=True)
            return
        room = scheduler.room()
        if not room or not scheduler.waiting:
            return
        candidates = scheduler.take_waiting(room)
        expired = [r for r in candidates if r.expired(now)]
        screened = await self._poison.screen([r for r in candidates if not r.expired(now)])
        scheduler.suspects.extend(screened.suspects)
        for request in screened.fresh:
            self._begin(request)
        answers = [self._answers.settles_expired(r) for r in expired]
        answers += [self._answers.settles_rejected(r) for r in screened.poison]
        answers += [self._answers.settles_cancelled(r) for r in screened.cancelled]  # unrun
        self._settle_later(answers, [])

    def _begin(self, request: PendingRequest, alone: bool = False) -> None:
        item = request.item
        sequence = Generation(request, item, self._model.assembler(item),
                              new_generator(item.sampling),
                              batch_size=len(self._scheduler.running) + 1)
        self._scheduler.start(sequence, alone)
        self._by_id[sequence.id] = sequence
        if item.stream:
            self._streams.open(sequence.id)
            self._streams.queue_opening(sequence.id)

    async def _step(self) -> None:
        plan = self._scheduler.plan()
        outcome = await self._in_thread(run_step, self._model, self._cache, plan)
        assert isinstance(outcome, StepOutcome)
        self._metrics.computed(self._model.name, outcome.prefill_s, outcome.decode_s)
        now = time.monotonic()
        finished: list[Generation] = []
        for sequence, token in outcome.tokens:
            if sequence.finish is not None:
                continue
            first = sequence.first_token_at is None
            previous = sequence.last_token_at
            if first:
                self._scheduler.prefilled(sequence)
            is_end = token in self._model.end_ids
            delta = sequence.accept(token, is_end, now)
            self._metrics.token(self._model.name, now - sequence.started if first else None,
                                None if previous is None else now - previous)
            if sequence.item.stream:
                self._streams.add(sequence.id, delta, 0 if is_end else 1)
            if sequence.finish is not None:
                finished.append(sequence)
        self._retire(finished)
        self._streams.flush_due(now)
        scheduler = self._scheduler
        assert self._cache is not None
        self._metrics.step(self._model.name, len(scheduler.running), scheduler.queued(),
                           scheduler.usage(), scheduler.rows * self._cache.capacity,
                           self._cache.allocated_bytes())

    def _retire(self, finished: list[Generation]) -> None:
        if not finished:
            return
        answers = []
        streamed = []
        for sequence in finished:
            self._scheduler.retire(sequence)
            self._by_id.pop(sequence.id, None)
            rest = sequence.end(sequence.finish or FinishReason.STOP)
            assert sequence.finish is not None
            self._metrics.finish(self._model.name, sequence.finish.value)
            if sequence.item.stream and not sequence.duplicate:
                self._streams.add(sequence.id, rest, 0)
                streamed.append(sequence)
            elif sequence.item.stream:
                self._streams.forget(sequence.id)
            answers.append(self._answer(sequence))
        self._streams.flush_due(time.monotonic(), [s.id for s in streamed])
        self._settle_later(answers, streamed)

    def _answer(self, sequence: Generation) -> Answer:
        finished = time.monotonic()
        log.info("generation.done", worker=self._answers.worker_id, model=self._model.name,
                 request_id=sequence.id, reason=sequence.finish and sequence.finish.value,
                 tokens=len(sequence.generated), seconds=round(finished - sequence.started, 3),
                 trace=sequence.request.traceparent)
        return self._answers.settles_output(
            sequence.request, self._model, sequence.output().to_wire(), sequence.batch_size,
            sequence.started, finished - sequence.started,
        )

    def _settle_later(self, answers: list[Answer], streamed: list[Generation]) -> None:
        if not answers:
            return

        async def settle() -> None:
            await self._settlement.settle(answers)
            for sequence in streamed:
                assert sequence.finish is not None
                self._streams.end(sequence.id, sequence.finish)

        task = asyncio.create_task(settle(), name="inferpool-settle-generations")
        self._settling.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        self._check_idle()
        if not task.cancelled() and task.exception() is not None:
            log.error("generation.settle_failed", error=repr(task.exception()))
        self._arrived.set()

    def _duplicate(self, request_id: str) -> None:
        """Its result was stored by an earlier run: stop this one, quietly."""
        sequence = self._by_id.get(request_id)
        if sequence is not None:
            sequence.duplicate = True
