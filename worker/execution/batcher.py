"""Batcher: deadline-aware micro-batching, a small pure unit (no I/O, time passed in).

A model's queue closes into a batch when it holds ``max_batch_size`` requests or
``max_batch_tokens`` of cost (FULL), when a request's own deadline, less the model's
recent batch time, needs it (DEADLINE), and — only while the model is idle — when its
oldest request has waited ``max_wait_s`` since it was fetched (WAITED). While the model is
busy with a batch, the next one keeps collecting instead of closing after ``max_wait_s``
with whatever has arrived: it closes when it is full, when a deadline needs it, or when
the model becomes free (then its oldest request has usually waited past ``max_wait_s``, so
it closes at once). So batches grow with load instead of queueing small behind each other,
and ``max_wait_s`` bounds the wait only when nothing else holds the model. While draining,
every queue closes at once (DRAIN). Requests already past
their deadline come out in ``Batch.expired`` and never reach the model. A batch never
mixes models, but may mix lanes and tenants: a model's queue is taken in service order
(``ServiceOrder``: high lanes first, with aging, and tenants by deficit round-robin), and
within a window of its first requests, a batch holds the first one and those nearest to it
in cost (token count, for text), so padding stays small.
Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.execution.service_order import OrderPolicy, ServiceOrder
from worker.models.config import BatchLimits
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
    limits: BatchLimits
    requests: ServiceOrder  # lanes, aging and tenants' fair share (service_order.py)
    # (deadline, sequence) of queued requests that have a deadline. Entries of requests
    # that left the queue are in ``gone`` and are dropped lazily when they reach the top.
    deadlines: list[tuple[float, int]] = field(default_factory=list)
    gone: set[int] = field(default_factory=set)
    cost: int = 0  # sum of the queued requests' costs
    costs: Counter[int] = field(default_factory=Counter)  # queued requests per cost
    batch_seconds: float = 0.0

    def earliest_deadline(self) -> float | None:
        while self.deadlines and self.deadlines[0][1] in self.gone:
            self.gone.discard(heapq.heappop(self.deadlines)[1])
        return self.deadlines[0][0] if self.deadlines else None

    def full(self) -> bool:
        tokens = self.limits.max_batch_tokens
        return len(self.requests) >= self.limits.max_batch_size or (
            tokens is not None and self.cost >= tokens
        )

    def uniform(self) -> bool:
        """Whether every queued request has the same cost (echo, tensors)."""
        return len(self.costs) <= 1

    def remove(self, entries: list[tuple[int, PendingRequest]]) -> None:
        for sequence, request in entries:
            self.cost -= request.cost
            left = self.costs[request.cost] - 1
            if left:
                self.costs[request.cost] = left
            else:
                del self.costs[request.cost]
            if request.deadline_monotonic is not None:
                self.gone.add(sequence)


def _fits(costs: list[int], lo: int, hi: int, limits: BatchLimits) -> bool:
    """Whether the requests ``lo..hi`` of ``costs`` (sorted ascending, so the largest is
    ``costs[hi]``) fit in one batch."""
    count = hi - lo + 1
    if count > limits.max_batch_size:
        return False
    tokens = limits.max_batch_tokens
    return tokens is None or count == 1 or costs[hi] * count <= tokens


def _uniform_count(available: int, cost: int, limits: BatchLimits) -> int:
    """How many requests of equal ``cost`` one batch takes, of ``available``."""
    count = min(available, limits.max_batch_size)
    if limits.max_batch_tokens is not None and cost > 0:
        count = min(count, max(1, limits.max_batch_tokens // cost))
    return count


def shape(window: list[tuple[int, PendingRequest]], limits: BatchLimits) -> list[int]:
    """Indices (into ``window``, oldest first) of the batch to run: the oldest request and
    the requests nearest to it in cost, so that padding stays small, within the limits."""
    window_costs = [entry[1].cost for entry in window]
    if min(window_costs) == max(window_costs):  # all alike (echo, tensors): the oldest first
        return list(range(_uniform_count(len(window), window_costs[0], limits)))
    order = sorted(range(len(window)), key=window_costs.__getitem__)
    costs = [window_costs[index] for index in order]
    lo = hi = order.index(0)
    while True:
        grow_low = lo > 0 and _fits(costs, lo - 1, hi, limits)
        grow_high = hi < len(order) - 1 and _fits(costs, lo, hi + 1, limits)
        if not (grow_low or grow_high):
            return sorted(order[lo : hi + 1])
        if grow_low and (not grow_high or costs[hi + 1] - costs[hi] >= costs[lo] - costs[lo - 1]):
            lo -= 1
        else:
            hi += 1


class Batcher:
    def __init__(
        self,
        max_batch_size: int,
        max_wait_s: float,
        limits: dict[str, BatchLimits] | None = None,
        window_batches: int = 4,
        order: OrderPolicy | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.default_limits = BatchLimits(max_batch_size)
        self.max_wait_s = max_wait_s
        self._limits = dict(limits or {})
        self._window_batches = window_batches
        self._order = order or OrderPolicy()
        self._queues: dict[str, _ModelQueue] = {}
        self._sequence = itertools.count()
        self._batch_ids = itertools.count(1)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _queue(self, model: str) -> _ModelQueue:
        queue = self._queues.get(model)
        if queue is None:
            queue = self._queues[model] = _ModelQueue(
                self._limits.get(model, self.default_limits), ServiceOrder(self._order)
            )
        return queue

    def add(self, request: PendingRequest) -> None:
        queue = self._queue(request.model)
        sequence = next(self._sequence)
        queue.requests.append((sequence, request))
        queue.cost += request.cost
        queue.costs[request.cost] += 1
        if request.deadline_monotonic is not None:
            heapq.heappush(queue.deadlines, (request.deadline_monotonic, sequence))
        self._size += 1

    def observe(self, model: str, batch_seconds: float) -> None:
        """Record how long a batch of ``model`` took; deadline closing uses the average."""
        queue = self._queue(model)
        if queue.batch_seconds == 0.0:
            queue.batch_seconds = batch_seconds
        else:
            queue.batch_seconds += _EWMA_WEIGHT * (batch_seconds - queue.batch_seconds)

    def _due(self, queue: _ModelQueue, busy: bool) -> tuple[float, CloseReason] | None:
        if not queue.requests:
            return None
        oldest = queue.requests.first()[1]
        if queue.full():
            return oldest.fetched_monotonic, CloseReason.FULL
        due, reason = oldest.fetched_monotonic + self.max_wait_s, CloseReason.WAITED
        if busy:  # the model cannot take it now: keep collecting
            due = float("inf")
        deadline = queue.earliest_deadline()
        if deadline is not None and deadline - queue.batch_seconds < due:
            due, reason = deadline - queue.batch_seconds, CloseReason.DEADLINE
        return None if due == float("inf") else (due, reason)

    def next_due(self, busy: bool = False) -> float | None:
        """The earliest time some queue closes (``busy``: while the model computes); None
        when nothing would close."""
        dues = [due[0] for queue in self._queues.values() if (due := self._due(queue, busy))]
        return min(dues, default=None)

    def take(self, now: float, drain: bool = False, busy: bool = False) -> Batch | None:
        """The next batch due at ``now`` (any non-empty queue when draining), or None;
        ``busy`` says the model is computing a batch (then nothing closes by waiting)."""
        chosen: tuple[float, str, CloseReason] | None = None
        for model, queue in self._queues.items():
            due = self._due(queue, busy and not drain)
            if due is None or (not drain and due[0] > now):
                continue
            if chosen is None or due[0] < chosen[0]:
                chosen = (due[0], model, CloseReason.DRAIN if drain else due[1])
        if chosen is None:
            return None
        _, model, reason = chosen
        return self._close(model, self._queues[model], reason, now)

    def _close(self, model: str, queue: _ModelQueue, reason: CloseReason, now: float) -> Batch:
        """Take the batch: from a window of the oldest requests, drop the expired ones and
        keep the oldest with its nearest neighbours in cost; the rest go back, in order."""
        window_size = queue.limits.max_batch_size * self._window_batches
        if queue.uniform():  # the oldest first: the window need hold one batch only
            window_size = _uniform_count(len(queue.requests), queue.requests.first()[1].cost,
                                         queue.limits) if queue.requests else 0
        window: list[tuple[int, PendingRequest]] = []
        expired: list[tuple[int, PendingRequest]] = []
        while queue.requests and len(window) < window_size:
            entry = queue.requests.pop()
            (expired if entry[1].expired(now) else window).append(entry)
        chosen = set(shape(window, queue.limits)) if window else set()
        taken = [entry for index, entry in enumerate(window) if index in chosen]
        kept = [entry for index, entry in enumerate(window) if index not in chosen]
        queue.requests.restore(kept)
        queue.requests.served(taken + expired)
        queue.remove(taken)
        queue.remove(expired)
        self._size -= len(taken) + len(expired)
        return Batch(
            next(self._batch_ids),
            model,
            [entry[1] for entry in taken],
            [entry[1] for entry in expired],
            reason,
            now,
        )

    def oldest_submitted_ms(self) -> int | None:
        """The submit time of the oldest queued request (None when nothing is queued)."""
        times = [e[1].envelope.submitted_ms for q in self._queues.values() for e in q.requests]
        return min(times, default=None)

    def discard(self, predicate: Callable[[PendingRequest], bool]) -> list[PendingRequest]:
        """Remove and return queued requests matching ``predicate`` (e.g. revoked partitions)."""
        removed: list[PendingRequest] = []
        for queue in self._queues.values():
            dropped = queue.requests.remove_if(predicate)
            if dropped:
                queue.remove(dropped)
                removed.extend(entry[1] for entry in dropped)
        self._size -= len(removed)
        return removed
