"""InMemoryResultStore: the ResultStore's semantics in one process's memory.

For unit tests of the worker's stages and of clients: results are kept encoded, exactly as
a Redis backend stores them (so an output that cannot be encoded becomes the same
``invalid_output`` error), the first write wins, and waiters are woken by every write.
Keys do not expire. Setting ``unavailable`` makes every call raise
``ResultStoreUnavailable``, as a Redis outage does.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator, Iterable, Sequence

from inferpool.errors import ResultStoreUnavailable, ResultTimeout
from inferpool.protocol import LoadSummary, ResultRecord, decode_result, encode_or_explain, now_ms
from inferpool.protocol.generation import EntryType, StreamEntry
from inferpool.protocol.wire import Encoding
from results.store import (
    LOAD_MAX_AGE_MS,
    Lookup,
    ResultStore,
    StreamAppend,
    StreamItem,
    lookup_of,
    missing_ids,
)


class InMemoryResultStore(ResultStore):
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}  # request id -> the encoded result
        self.accepted: set[str] = set()
        self.attempts: Counter[str] = Counter()
        self.writes = 0  # calls of write(), for tests
        self.streams: dict[str, list[StreamItem]] = {}  # request id -> its entries
        self.cancels: set[str] = set()
        self.loads: dict[str, dict[str, LoadSummary]] = {}  # model -> worker -> summary
        self._entry_ids = 0
        self.unavailable = False
        self._written = asyncio.Condition()

    def _check(self, action: str) -> None:
        if self.unavailable:
            raise ResultStoreUnavailable(f"result store (in memory) unavailable during {action}")

    def record(self, request_id: str) -> ResultRecord | None:
        """The stored result of ``request_id``, decoded (None if it has none)."""
        raw = self.values.get(request_id)
        return decode_result(request_id, raw) if raw is not None else None

    async def write(
        self, results: Sequence[tuple[ResultRecord, Encoding]], settled: Sequence[str] = ()
    ) -> int:
        self._require_started()
        self._check("result write")
        self.writes += 1
        new = 0
        for record, encoding in results:
            if record.id not in self.values:
                self.values[record.id] = encode_or_explain(record, encoding)
                new += 1
        for record_id in settled:
            self.attempts.pop(record_id, None)
        async with self._written:
            self._written.notify_all()
        return new

    async def mark_accepted(
        self, request_ids: Sequence[str], released: Sequence[str] = ()
    ) -> None:
        self._require_started()
        self._check("accepted marker write")
        self.accepted.update(request_ids)
        for record_id in released:
            self.attempts[record_id] -= 1
            if self.attempts[record_id] <= 0:
                del self.attempts[record_id]

    async def count_attempts(self, record_ids: Sequence[str], delta: int = 1) -> list[int]:
        self._require_started()
        self._check("attempt count")
        for record_id in record_ids:
            self.attempts[record_id] += delta
        return [self.attempts[record_id] for record_id in record_ids]

    async def start_attempts(
        self, record_ids: Sequence[str], request_ids: Sequence[str]
    ) -> tuple[list[int], list[bool]]:
        counts = await self.count_attempts(record_ids)
        return counts, [request_id in self.cancels for request_id in request_ids]

    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[bool]:
        self._require_started()
        self._check("stream append")
        answered = []
        for append in appends:
            has = append.opening and append.request_id in self.values
            answered.append(has)
            if has:
                continue
            stream = self.streams.get(append.request_id)
            entries = list(append.entries)
            if append.opening and stream:
                entries.insert(0, StreamEntry(EntryType.RESTART, worker=append.worker))
            if not entries:
                continue
            stream = self.streams.setdefault(append.request_id, [])
            for entry in entries:
                self._entry_ids += 1
                stream.append((f"{self._entry_ids}-0", entry))
        async with self._written:
            self._written.notify_all()
        return answered

    async def cancel_requested(self, request_ids: Sequence[str]) -> list[bool]:
        self._require_started()
        self._check("cancel check")
        return [request_id in self.cancels for request_id in request_ids]

    async def request_cancel(self, request_id: str) -> None:
        self._require_started()
        self._check("cancel request")
        self.cancels.add(request_id)

    async def publish_load(self, model: str, summary: LoadSummary, ttl_s: float) -> None:
        self._require_started()
        self._check("load summary write")
        self.loads.setdefault(model, {})[summary.worker] = summary

    async def load(self, model: str, max_age_ms: int = LOAD_MAX_AGE_MS) -> list[LoadSummary]:
        self._require_started()
        self._check("load summary read")
        oldest = now_ms() - max_age_ms
        return [s for s in self.loads.get(model, {}).values() if s.updated_ms >= oldest]

    async def read_stream(
        self, request_id: str, after: str, timeout_s: float
    ) -> list[StreamItem]:
        self._require_started()
        self._check("stream read")
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            newer = [item for item in self.streams.get(request_id, []) if _after(item[0], after)]
            if newer or timeout_s <= 0:
                return newer
            try:
                async with asyncio.timeout_at(deadline), self._written:
                    await self._written.wait()
            except TimeoutError:
                return []

    async def get(self, request_id: str) -> Lookup:
        self._require_started()
        self._check("result lookup")
        return lookup_of(self.record(request_id), request_id in self.accepted)

    async def wait_many(
        self, request_ids: Iterable[str], timeout_s: float
    ) -> AsyncGenerator[ResultRecord, None]:
        self._require_started()
        remaining = dict.fromkeys(request_ids)
        total = len(remaining)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while remaining:
            for request_id in [rid for rid in remaining if rid in self.values]:
                del remaining[request_id]
                record = self.record(request_id)
                assert record is not None
                yield record
            if not remaining:
                return
            try:
                async with asyncio.timeout_at(deadline), self._written:
                    await self._written.wait()
            except TimeoutError:
                raise ResultTimeout(
                    f"{len(remaining)} of {total} results did not arrive within "
                    f"{timeout_s:g}s (e.g. {missing_ids(remaining)})"
                ) from None


def _after(entry_id: str, after: str) -> bool:
    def number(value: str) -> tuple[int, int]:
        first, _, second = value.partition("-")
        return int(first), int(second or 0)

    return number(entry_id) > number(after)
