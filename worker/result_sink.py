"""ResultSink: stores results, retrying with backoff while Redis is unavailable.

Nothing is committed for a batch until its results are stored, so while Redis is down
the worker holds its batch, stops taking new ones (back-pressure pauses fetching), and
resumes where it was once Redis answers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from inferpool.errors import ResultStoreUnavailable
from inferpool.logs import get_logger
from inferpool.protocol import ResultRecord
from inferpool.protocol.wire import Encoding
from results.writer import ResultWriter

log = get_logger("worker.result_sink")

T = TypeVar("T")

INITIAL_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0


class ResultSink:
    def __init__(self, writer: ResultWriter, on_retry: Callable[[], None] = lambda: None) -> None:
        self._writer = writer
        self._on_retry = on_retry

    async def _retrying(self, action: Callable[[], Awaitable[T]], what: str, size: int) -> T:
        """Run ``action`` until Redis answers, backing off (cancel to give up)."""
        backoff = INITIAL_BACKOFF_S
        attempt = 1
        while True:
            try:
                return await action()
            except ResultStoreUnavailable as error:
                self._on_retry()
                log.warning(
                    "results.store_retry",
                    action=what,
                    attempt=attempt,
                    backoff_s=backoff,
                    error=str(error),
                    size=size,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                attempt += 1

    async def store(self, results: Sequence[tuple[ResultRecord, Encoding]]) -> int:
        """Store every result; retries until Redis answers."""
        return await self._retrying(lambda: self._writer.write(results), "write", len(results))

    async def count_attempts(self, request_ids: Sequence[str], delta: int = 1) -> list[int]:
        """Add ``delta`` attempts at each request; their counts. Retries until Redis answers."""
        return await self._retrying(
            lambda: self._writer.count_attempts(request_ids, delta),
            "count_attempts",
            len(request_ids),
        )

    async def mark_accepted(self, request_ids: Sequence[str]) -> None:
        """Best effort: a missing marker only makes a pending request look unknown."""
        try:
            await self._writer.mark_accepted(request_ids)
        except ResultStoreUnavailable as error:
            log.warning("results.accept_mark_failed", error=str(error), requests=len(request_ids))
