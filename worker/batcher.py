"""Batcher: deadline-aware micro-batching, a small pure unit (no I/O, time passed in).

A model's queue closes into a batch when it holds ``max_batch_size`` requests (FULL),
when its oldest request has waited ``max_wait_s`` since it was fetched (WAITED), or
earlier when a request's own deadline, less the model's recent batch time, needs it
(DEADLINE). While draining, every queue closes at once (DRAIN). Requests already past
their deadline come out in ``Batch.expired`` and never reach the model. A batch never
mixes models. Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.request import PendingRequest

_EWMA_WEIGHT = 0.2


class CloseReason(enum.StrEnum):
    FULL = "full"
    WAITED = "waited"
    DEADLINE = "deadline"
    DRAIN = "drain"


@dataclass(frozen=True, slots=True)
class Batch:
    id: int
    model: str
    requests: list[PendingRequest]
    expired: list[PendingRequest]
    reason: CloseReason
    closed_monotonic: float


@dataclass(slots=True)
class _ModelQueue:
    requests: deque[tuple[int, PendingRequest]] = field(default_factory=deque)
    # (deadline, sequence) of queued requests that have a deadline; stale entries (already
    # taken) are dropped lazily: requests leave from the front, in sequence order.
    deadlines: list[tuple[float, int]] = field(default_factory=list)
    batch_seconds: float = 0.0

    def earliest_deadline(self) -> float | None:
        first_sequence = self.requests[0][0] if self.requests else None
        while self.deadlines and (first_sequence is None or self.deadlines[0][1] < first_sequence):
            heapq.heappop(self.deadlines)
        return self.deadlines[0][0] if self.deadlines else None


class Batcher:
    def __init__(self, max_batch_size: int, max_wait_s: float) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._queues: dict[str, _ModelQueue] = {}
        self._sequence = itertools.count()
        self._batch_ids = itertools.count(1)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, request: PendingRequest) -> None:
        queue = self._queues.setdefault(request.model, _ModelQueue())
        sequence = next(self._sequence)
        queue.requests.append((sequence, request))
        if request.deadline_monotonic is not None:
            heapq.heappush(queue.deadlines, (request.deadline_monotonic, sequence))
        self._size += 1

    def observe(self, model: str, batch_seconds: float) -> None:
        """Record how long a batch of ``model`` took; deadline closing uses the average."""
        queue = self._queues.setdefault(model, _ModelQueue())
        if queue.batch_seconds == 0.0:
            queue.batch_seconds = batch_seconds
        else:
            queue.batch_seconds += _EWMA_WEIGHT * (batch_seconds - queue.batch_seconds)

    def _due(self, queue: _ModelQueue) -> tuple[float, CloseReason] | None:
        if not queue.requests:
            return None
        oldest = queue.requests[0][1]
        if len(queue.requests) >= self.max_batch_size:
            return oldest.fetched_monotonic, CloseReason.FULL
        due, reason = oldest.fetched_monotonic + self.max_wait_s, CloseReason.WAITED
        deadline = queue.earliest_deadline()
        if deadline is not None and deadline - queue.batch_seconds < due:
            due, reason = deadline - queue.batch_seconds, CloseReason.DEADLINE
        return due, reason

    def next_due(self) -> float | None:
        """The earliest time some queue closes; None when nothing is queued."""
        dues = [due[0] for queue in self._queues.values() if (due := self._due(queue))]
        return min(dues, default=None)

    def take(self, now: float, drain: bool = False) -> Batch | None:
        """The next batch due at ``now`` (any non-empty queue when draining), or None."""
        chosen: tuple[float, str, CloseReason] | None = None
        for model, queue in self._queues.items():
            due = self._due(queue)
            if due is None or (not drain and due[0] > now):
                continue
            if chosen is None or due[0] < chosen[0]:
                chosen = (due[0], model, CloseReason.DRAIN if drain else due[1])
        if chosen is None:
            return None
        _, model, reason = chosen
        return self._close(model, self._queues[model], reason, now)

    def _close(self, model: str, queue: _ModelQueue, reason: CloseReason, now: float) -> Batch:
        requests: list[PendingRequest] = []
        expired: list[PendingRequest] = []
        while queue.requests and len(requests) < self.max_batch_size:
            _, request = queue.requests.popleft()
            (expired if request.expired(now) else requests).append(request)
        self._size -= len(requests) + len(expired)
        return Batch(next(self._batch_ids), model, requests, expired, reason, now)

    def discard(self, predicate: Callable[[PendingRequest], bool]) -> list[PendingRequest]:
        """Remove and return queued requests matching ``predicate`` (e.g. revoked partitions)."""
        removed: list[PendingRequest] = []
        for queue in self._queues.values():
            kept = deque(entry for entry in queue.requests if not predicate(entry[1]))
            removed.extend(entry[1] for entry in queue.requests if predicate(entry[1]))
            queue.requests = kept
            queue.deadlines = [
                (entry[1].deadline_monotonic, entry[0])
                for entry in kept
                if entry[1].deadline_monotonic is not None
            ]
            heapq.heapify(queue.deadlines)
        self._size -= len(removed)
        return removed
