"""ResultReader and SyncResultReader: the Redis result store as a client uses it.

``ResultReader`` is async (``get``, ``wait``, ``wait_many``, for generations ``stream``
and ``read_stream``, and ``request_cancel``, ``load``); ``SyncResultReader`` offers the
same calls, blocking, for code without an event loop.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Iterator

from inferpool.lifecycle import SyncService
from inferpool.protocol import LoadSummary, ResultKeys, ResultRecord
from inferpool.protocol.generation import StreamEntry
from inferpool.settings import RedisSettings
from inferpool.sync import SyncBridge
from results.redis_store import DEFAULT_POLL_INTERVAL_S, RedisResultStore
from results.store import Lookup


class ResultReader(RedisResultStore):
    """Reads results; ``poll_interval_s`` is how often a wait re-reads every missing id."""

    def __init__(
        self, redis: RedisSettings, keys: ResultKeys, poll_interval_s: float = 1.0
    ) -> None:
        super().__init__(redis, keys, poll_interval_s=poll_interval_s)


#: How long past its own timeout a blocking wait gives the reader's loop.
STUCK_LOOP_GRACE_S = 30.0


class SyncResultReader(SyncService):
    """A blocking ResultReader, used as ``with``; safe from any thread (its loop runs in a
    thread of its own)."""

    def __init__(
        self,
        redis: RedisSettings,
        keys: ResultKeys,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        self._bridge = SyncBridge(ResultReader(redis, keys, poll_interval_s), "SyncResultReader")

    def start(self) -> None:
        self._bridge.start()

    def stop(self) -> None:
        self._bridge.close()

    def get(self, request_id: str) -> Lookup:
        return self._bridge.call(self._bridge.service.get(request_id))

    def wait(self, request_id: str, timeout_s: float) -> ResultRecord:
        return self._bridge.call(self._bridge.service.wait(request_id, timeout_s))

    def wait_many(self, request_ids: Iterable[str], timeout_s: float) -> list[ResultRecord]:
        """Every result, once all arrived; ResultTimeout if some did not within
        ``timeout_s``."""
        return self._bridge.call(self._collect(list(request_ids), timeout_s))

    async def _collect(self, request_ids: list[str], timeout_s: float) -> list[ResultRecord]:
        return [record async for record in self._bridge.service.wait_many(request_ids, timeout_s)]

    def stream(
        self, request_id: str, timeout_s: float, after: str = "0"
    ) -> Iterator[StreamEntry | ResultRecord]:
        """A generation's ``tokens`` / ``restart`` entries as they come, then its result."""
        entries = self._bridge.service.stream(request_id, timeout_s, after)
        try:
            while True:
                try:
                    yield self._bridge.call(_next(entries))
                except StopAsyncIteration:
                    return
        finally:
            self._bridge.call(entries.aclose())

    def request_cancel(self, request_id: str) -> None:
        """Cancel the request: answered ``cancelled`` unless it started; a generation stops
        at its next step; a finished request keeps its result."""
        self._bridge.call(self._bridge.service.request_cancel(request_id))

    def load(self, model: str) -> list[LoadSummary]:
        """The workers' fresh load summaries of ``model``."""
        return self._bridge.call(self._bridge.service.load(model))


async def _next(
    entries: AsyncGenerator[StreamEntry | ResultRecord, None],
) -> StreamEntry | ResultRecord:
    return await entries.__anext__()
