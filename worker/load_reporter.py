"""LoadReporter: every ``load_report_interval_ms``, this worker's load summary of each of
its models goes to the result store (``ResultKeys.load``), for admission at submit.

A summary holds, per lane, the backlog this worker sees (of the lane's partitions it holds:
requests held and not yet answered, plus those not fetched yet),
and the model's recent service rate, batch time and capacity (``ServiceRates``). With one
request topic for several models, a topic's backlog counts toward each of them. A write that
fails is logged and skipped: the summaries are hints, and a stale one is ignored by
readers after ``results.store.LOAD_MAX_AGE_MS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from inferpool.protocol import LoadSummary, Priority, lane_topic, now_ms
from worker.result_sink import ResultSink
from worker.service_rates import ServiceRates

log = get_logger("worker.load")

LagFunction = Callable[[], dict[tuple[str, int], int]]
#: A summary hash lives this many report intervals (at least MIN_TTL_S) unless written
#: again; readers skip summaries older than LOAD_MAX_AGE_MS anyway.
TTL_INTERVALS = 5
MIN_TTL_S = 10.0


class LoadReporter(Service):
    def __init__(
        self,
        worker_id: str,
        topics: dict[str, str],  # model -> its request topic (the normal lane)
        backlog: LagFunction,  # per partition (Admission.backlog)
        rates: ServiceRates,
        sink: ResultSink,
        interval_s: float,
    ) -> None:
        self._worker_id = worker_id
        self._topics = topics
        self._backlog = backlog
        self._rates = rates
        self._sink = sink
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inferpool-load-reporter")

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def summaries(self) -> dict[str, LoadSummary]:
        """This worker's summary of each model, now."""
        backlog_by_topic: dict[str, int] = {}
        for (topic, _partition), count in self._backlog().items():
            backlog_by_topic[topic] = backlog_by_topic.get(topic, 0) + count
        now, stamp = time.monotonic(), now_ms()
        summaries = {}
        for model, topic in self._topics.items():
            sample = self._rates.sample(model, now)
            backlog = {p.value: backlog_by_topic.get(lane_topic(topic, p), 0) for p in Priority}
            summaries[model] = LoadSummary(
                self._worker_id, backlog, round(sample.rate_per_s, 3), round(sample.batch_ms, 3),
                round(sample.capacity_per_s, 3), stamp,
            )
        return summaries

    async def report(self) -> None:
        ttl_s = max(self._interval_s * TTL_INTERVALS, MIN_TTL_S)
        for model, summary in self.summaries().items():
            await self._sink.publish_load(model, summary, ttl_s)

    async def _run(self) -> None:
        while True:
            try:
                await self.report()
            except Exception as error:  # an observer never breaks the pipeline
                log.warning("load.report_failed", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(self._interval_s)
