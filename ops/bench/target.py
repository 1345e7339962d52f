"""What the benchmark's two load targets (the pool, the Celery peer) share: the requests
sent and not yet answered, the completions as they are seen, and one task reading a Redis
pattern subscription through which each system tells that a request is done."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ops.bench.stats import Completion


class WatchedTarget:
    def __init__(self) -> None:
        self._pending: dict[str, float] = {}  # request id -> due (perf_counter)
        self._redis: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.completed: asyncio.Queue[list[Completion]] = asyncio.Queue()

    def pending(self) -> int:
        return len(self._pending)

    def abandon(self) -> int:
        count = len(self._pending)
        self._pending.clear()
        return count

    async def _watch(self, redis: Any, pattern: str) -> None:
        """Own ``redis`` and read ``pattern``'s messages with ``_read`` until ``_unwatch``."""
        self._redis = redis
        pubsub = redis.pubsub()
        await pubsub.psubscribe(pattern)
        self._reader = asyncio.create_task(self._reading(pubsub))

    async def _unwatch(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    async def _reading(self, pubsub: Any) -> None:
        try:
            await self._read(pubsub)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _read(self, pubsub: Any) -> None:
        raise NotImplementedError
