"""StreamPublisher: the running sequences' text, appended to their Redis streams.

Deltas are gathered per request and flushed as one ``tokens`` entry once ``every_tokens``
tokens are pending or ``every_s`` has passed since the request's last entry; all the
entries due after a step go out in one store call, from a writer task of their own, so the
step loop never waits on Redis. Entries of one request keep their order (one writer, one
queue). A run's first append is its opening one: the store adds a restart entry first if an
earlier run left entries, and answers whether the request has a result already (then the
run is a duplicate and stops). ``end`` is queued after the request's result is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from inferpool.logs import get_logger
from inferpool.protocol.generation import EntryType, FinishReason, StreamEntry
from results.store import StreamAppend

log = get_logger("worker.stream_publisher")

Append = Callable[[Sequence[StreamAppend]], Awaitable[list[bool]]]


@dataclass(slots=True)
class _Pending:
    text: str = ""
    tokens: int = 0
    entries: int = 0  # tokens entries written (the next one's seq)
    total: int = 0
    opened: bool = False
    last_flush: float = 0.0


class StreamPublisher:
    def __init__(
        self,
        append: Append,
        worker_id: str,
        every_tokens: int,
        every_s: float,
        on_duplicate: Callable[[str], None],
    ) -> None:
        self._append = append
        self._worker = worker_id
        self._every_tokens = every_tokens
        self._every_s = every_s
        self._on_duplicate = on_duplicate
        self._pending: dict[str, _Pending] = {}
        self._queue: list[StreamAppend] = []
        self._wake = asyncio.Event()
        self._closing = False

    def open(self, request_id: str) -> None:
        self._pending[request_id] = _Pending(last_flush=time.monotonic())

    def queue_opening(self, request_id: str) -> None:
        """The run's opening append (no entries): a restart entry if an earlier run left
        some, and the check that the request has no result yet."""
        pending = self._pending.get(request_id)
        if pending is not None and not pending.opened:
            self._queue_entries(request_id, pending, ())
            self._wake.set()

    def add(self, request_id: str, text: str, tokens: int) -> None:
        pending = self._pending.get(request_id)
        if pending is not None:
            pending.text += text
            pending.tokens += tokens

    def flush_due(self, now: float, request_ids: Sequence[str] | None = None) -> None:
        """Queue a ``tokens`` entry for each request whose entry is due (or for each of
        ``request_ids``, due or not)."""
        for request_id in request_ids if request_ids is not None else list(self._pending):
            pending = self._pending.get(request_id)
            if pending is None or not (pending.text or pending.tokens):
                continue
            forced = request_ids is not None
            due = pending.tokens >= self._every_tokens or now - pending.last_flush >= self._every_s
            if not (forced or due):
                continue
            entry = StreamEntry(EntryType.TOKENS, pending.entries, pending.text, pending.tokens)
            self._queue_entries(request_id, pending, (entry,))
            pending.entries += 1
            pending.total += pending.tokens
            pending.text, pending.tokens, pending.last_flush = "", 0, now
        if self._queue:
            self._wake.set()

    def end(self, request_id: str, reason: FinishReason) -> None:
        """The request's result is stored: its stream's final entry."""
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return
        entry = StreamEntry(
            EntryType.END, pending.entries, tokens=pending.total, finish_reason=reason,
            worker=self._worker,
        )
        self._queue_entries(request_id, pending, (entry,))
        self._wake.set()

    def forget(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    def _queue_entries(
        self, request_id: str, pending: _Pending, entries: tuple[StreamEntry, ...]
    ) -> None:
        self._queue.append(StreamAppend(request_id, entries, opening=not pending.opened,
                                        worker=self._worker))
        pending.opened = True

    async def run(self) -> None:
        """Write what is queued, until ``close`` and the queue is empty."""
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            batch, self._queue = self._queue, []
            answered = await self._append(batch)
            for append, has_result in zip(batch, answered, strict=True):
                if has_result and append.opening:
                    self._on_duplicate(append.request_id)

    def close(self) -> None:
        self._closing = True
        self._wake.set()
