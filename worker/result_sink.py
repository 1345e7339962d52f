"""ResultSink: the worker's way to the result store, retrying with back-off while the store
is unavailable.

Nothing is committed for a request until its result is stored, so while the store is down
the worker holds what it has, stops taking more (back-pressure pauses fetching), and goes
on where it was once the store answers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from inferpool.backoff import Backoff, retrying
from inferpool.errors import ResultStoreUnavailable
from inferpool.logs import get_logger
from inferpool.protocol import LoadSummary, ResultRecord
from inferpool.protocol.wire import Encoding
from results.store import ResultStore, StreamAppend

log = get_logger("worker.result_sink")

T = TypeVar("T")

FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0


class ResultSink:
    def __init__(self, store: ResultStore, on_retry: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._on_retry = on_retry

    async def _retrying(self, action: Callable[[], Awaitable[T]], what: str, size: int) -> T:
        """Run ``action`` until the store answers, backing off (cancel to give up)."""

        def report(error: Exception, attempt: int, delay_s: float) -> None:
            self._on_retry()
            log.warning("results.store_retry", action=what, attempt=attempt, backoff_s=delay_s,
                        error=str(error), size=size)

        return await retrying(action, (ResultStoreUnavailable,), report,
                              Backoff(FIRST_BACKOFF_S, MAX_BACKOFF_S))

    async def check_access(self) -> None:
        """The store's start-up access check; waits while the store is unavailable."""
        await self._retrying(self._store.check_access, "check_access", 0)

    async def store(
        self, results: Sequence[tuple[ResultRecord, Encoding]], settled: Sequence[str] = ()
    ) -> int:
        """Store every result and forget the settled records' attempts; retries until the
        store answers."""
        return await self._retrying(
            lambda: self._store.write(results, settled), "write", len(results)
        )

    async def count_attempts(self, record_ids: Sequence[str], delta: int = 1) -> list[int]:
        """Add ``delta`` attempts at each record; their counts. Retries until it answers."""
        return await self._retrying(
            lambda: self._store.count_attempts(record_ids, delta),
            "count_attempts",
            len(record_ids),
        )

    async def start_attempts(
        self, record_ids: Sequence[str], request_ids: Sequence[str]
    ) -> tuple[list[int], list[bool]]:
        """One attempt more at each record, and the requests' cancel flags, in one round
        trip; retries until the store answers (a count is never skipped)."""
        return await self._retrying(
            lambda: self._store.start_attempts(record_ids, request_ids),
            "start_attempts",
            len(record_ids),
        )

    async def count_attempts_now(
        self, record_ids: Sequence[str], timeout_s: float
    ) -> list[int] | None:
        """One try, bounded by ``timeout_s``; None when the store did not answer (callers on
        the fetch loop must not wait for it)."""
        try:
            return await asyncio.wait_for(self._store.count_attempts(record_ids), timeout_s)
        except (ResultStoreUnavailable, TimeoutError) as error:
            log.warning("results.attempt_count_skipped", error=str(error) or "timeout",
                        records=len(record_ids))
            return None

    async def accept_now(
        self, request_ids: Sequence[str], released: Sequence[str], timeout_s: float
    ) -> None:
        """Mark requests accepted and take one attempt off each released record, now;
        bounded by ``timeout_s`` (best effort)."""
        try:
            await asyncio.wait_for(self._store.mark_accepted(request_ids, released), timeout_s)
        except (ResultStoreUnavailable, TimeoutError) as error:
            log.warning("results.accept_skipped", error=str(error) or "timeout",
                        requests=len(request_ids), records=len(released))

    async def mark_accepted(self, request_ids: Sequence[str], released: Sequence[str] = ()) -> None:
        """Best effort: a missing marker only makes a pending request look unknown, and an
        attempt not released only makes its record a suspect (run alone) next time."""
        try:
            await self._store.mark_accepted(request_ids, released)
        except ResultStoreUnavailable as error:
            log.warning("results.accept_mark_failed", error=str(error), requests=len(request_ids))

    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[bool]:
        """Append generation entries to their streams; retries until the store answers.
        Per append, whether the request already had a result."""
        return await self._retrying(
            lambda: self._store.append_streams(appends), "append_streams", len(appends)
        )

    async def cancel_requested(self, request_ids: Sequence[str]) -> list[bool]:
        """Best effort: while the store is unavailable, nothing counts as cancelled."""
        try:
            return await self._store.cancel_requested(request_ids)
        except ResultStoreUnavailable as error:
            log.warning("results.cancel_check_failed", error=str(error), requests=len(request_ids))
            return [False] * len(request_ids)

    async def publish_load(self, model: str, summary: LoadSummary, ttl_s: float) -> None:
        """Best effort: a summary not written is only a hint missing."""
        try:
            await self._store.publish_load(model, summary, ttl_s)
        except ResultStoreUnavailable as error:
            log.warning("results.load_write_failed", error=str(error), model=model)
