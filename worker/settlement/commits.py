"""Committer: commits what the tracker says is answered, every interval and on demand.

After a failed commit (a rebalance, the broker away) it waits twice as long each time, up
to MAX_BACKOFF_S, instead of retrying in a storm.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from inferpool.backoff import Backoff
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker, TopicPartition

MAX_BACKOFF_S = 5.0
MIN_INTERVAL_S = 0.01


class OffsetCommitter(Protocol):
    """What the committer needs from the consumer (``RequestConsumer`` is the real one)."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool: ...


class Committer:
    def __init__(
        self,
        consumer: OffsetCommitter,
        tracker: OffsetTracker,
        metrics: WorkerMetrics,
        interval_ms: float,
    ) -> None:
        self._consumer = consumer
        self._tracker = tracker
        self._metrics = metrics
        self._interval_s = max(interval_ms / 1000, MIN_INTERVAL_S)
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """Commit every interval until cancelled."""
        backoff = Backoff(min(self._interval_s * 2, MAX_BACKOFF_S), MAX_BACKOFF_S)
        wait = self._interval_s
        while True:
            await asyncio.sleep(wait)
            if await self.commit():
                backoff.reset()
                wait = self._interval_s
            else:
                wait = backoff.next()

    async def commit(self, partitions: list[TopicPartition] | None = None) -> bool:
        """Commit what is answered; False if the commit failed (it is logged and counted)."""
        async with self._lock:
            offsets = self._tracker.committable(partitions)
            if not offsets:
                return True
            if await self._consumer.commit(offsets):
                self._tracker.committed(offsets)
                return True
            self._metrics.commit_failures.inc()
            return False
