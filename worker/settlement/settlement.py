"""Settlement: the one path by which every fetched record is answered.

Whatever the outcome (ok, error, expired, rejected, poison), ``settle`` does the same
steps, in this order: the results stored (first write wins; retried while the store is
unavailable), the offsets answered in the tracker (so they may be committed), the rejected
records' dead-letter copies handed to the dead-letter sink (best effort, in the
background: a dead-letter topic that is down never holds an answer or a commit), the
metrics and the log events. A record counts as held by the
worker until it is settled; if settling is cancelled (a drain that ran out of time), its
offset is not answered and the partition's next owner runs it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

from inferpool.logs import get_logger
from inferpool.protocol import ResultStatus, lane_of_topic
from results.store import StreamAppend
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.request import Answer, Rejection
from worker.result_sink import ResultSink

log = get_logger("worker.settlement")

class DeadLetters(Protocol):
    """Where rejected records are copied (``DeadLetterSink`` is the real one): ``submit``
    queues the copies and returns at once; they are sent in the background."""

    def submit(self, rejections: Sequence[Rejection]) -> None: ...


class Settlement:
    def __init__(
        self,
        sink: ResultSink,
        dead_letters: DeadLetters,
        tracker: OffsetTracker,
        metrics: WorkerMetrics,
        on_failure: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self._sink = sink
        self._dead_letters = dead_letters
        self._tracker = tracker
        self._metrics = metrics
        self._on_failure = on_failure
        self._background: set[asyncio.Task[None]] = set()

    async def settle(self, answers: Sequence[Answer]) -> None:
        """Answer every record of ``answers``; returns once all are stored and answered."""
        if not answers:
            return
        results = [(a.result, a.encoding) for a in answers if a.result is not None]
        await self._sink.store(results, settled=[answer.token.record_id for answer in answers])
        for answer in answers:
            self._tracker.answer(answer.token)
        rejections = [answer.rejection for answer in answers if answer.rejection is not None]
        if rejections:
            self._dead_letters.submit(rejections)
        self._metrics.answered(record for record, _ in results)
        self._metrics.answered_in_lanes(
            (lane_of_topic(a.token.partition.topic), a.result) for a in answers if a.result
        )
        self._report(rejections, answers)

    async def publish(self, appends: Sequence[StreamAppend]) -> list[bool]:
        """Partial outputs (a generation's token stream): they never settle a record.
        Retried while the store is unavailable; per append, whether the request had a
        result already."""
        return await self._sink.append_streams(appends)

    async def cancel_requested(self, request_ids: Sequence[str]) -> list[bool]:
        """Which of these running requests a client asked to cancel (best effort)."""
        return await self._sink.cancel_requested(request_ids)

    def settle_soon(self, answers: Sequence[Answer]) -> None:
        """Settle in the background (the caller must not wait on the store: the fetch loop,
        whose consumer would otherwise miss max_poll_interval_ms during a store outage)."""
        if not answers:
            return
        task = asyncio.create_task(self.settle(answers), name="inferpool-settle")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(self._on_failure)

    async def settled_in_background(self) -> None:
        """Wait for every background settle started so far."""
        await asyncio.gather(*self._background, return_exceptions=True)

    def cancel_background(self) -> list[asyncio.Task[None]]:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        return tasks

    def _report(self, rejections: list[Rejection], answers: Sequence[Answer]) -> None:
        for rejection in rejections:
            self._metrics.dead_letters.labels(rejection.error.code).inc()
            log.info(
                "request.rejected",
                request_id=rejection.request_id,
                trace=rejection.traceparent,
                code=rejection.error.code,
                error=str(rejection.error),
                partition=rejection.record.partition,
                offset=rejection.record.offset,
            )
        expired = [
            a.result.id for a in answers if a.result and a.result.status is ResultStatus.EXPIRED
        ]
        if expired:
            log.info("request.expired", request_ids=expired)
