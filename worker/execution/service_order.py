"""ServiceOrder: the order in which one model's queued requests go into batches.

Lanes first, with aging: the lane served next is the one whose next request has the
smallest ``fetched + rank * aging_s`` (rank 0 high, 1 normal, 2 low). So a high request
goes before the low ones fetched up to ``2 * aging_s`` before it, and a low request goes
before every high request fetched more than ``2 * aging_s`` after it: low never starves,
and the bound holds whatever the load of high (docs/protocol.md, "Priority lanes").

Inside a lane, tenants share by deficit round-robin: each tenant's queue gets
``share`` requests per round (fractions carry over, as DRR's deficit does); a tenant's
requests are numbered in its active period, so its k-th queued request is served in round
``start + ceil(k / share) - 1``, where ``start`` is the lane's round when it became
active. The round of every request is fixed when it is queued, which gives exactly DRR's
order with unit costs, and lets requests taken for a batch window go back unchanged.
A pure unit: no I/O; times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from inferpool.protocol import Priority
from worker.request import PendingRequest

Entry = tuple[int, PendingRequest]  # (sequence, request), as the batcher queues them

DEFAULT_AGING_S = 2.0


@dataclass(frozen=True, slots=True)
class OrderPolicy:
    """``aging_s``: how long a request waits to count as one lane higher; ``shares``: each
    tenant's weight inside a lane (others, and requests without a tenant: 1)."""

    aging_s: float = DEFAULT_AGING_S
    shares: Mapping[str, float] = field(default_factory=dict)

    def share(self, tenant: str | None) -> float:
        return self.shares.get(tenant, 1.0) if tenant is not None else 1.0


@dataclass(slots=True)
class _Tenant:
    queued: int = 0
    start: int = 0  # the lane's round when this tenant's active period began
    numbered: int = 0  # requests numbered in this active period


@dataclass(slots=True)
class _Lane:
    rank: int
    heap: list[tuple[int, int, PendingRequest]] = field(default_factory=list)  # round, seq
    round: int = 0  # the round being served
    tenants: dict[str | None, _Tenant] = field(default_factory=dict)


class ServiceOrder:
    """One model's queue. ``pop`` gives the next request in service order; ``restore``
    puts popped ones back exactly where they were; ``served`` says they left for good."""

    def __init__(self, policy: OrderPolicy | None = None) -> None:
        self._policy = policy or OrderPolicy()
        self._lanes = {priority: _Lane(priority.rank) for priority in Priority}
        self._rounds: dict[int, int] = {}  # sequence -> its round
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def __iter__(self) -> Iterator[Entry]:
        """Every queued entry, in no particular order."""
        for lane in self._lanes.values():
            for _round, sequence, request in lane.heap:
                yield sequence, request

    def append(self, entry: Entry) -> None:
        sequence, request = entry
        lane = self._lanes[request.envelope.priority]
        tenant = lane.tenants.setdefault(request.envelope.tenant, _Tenant())
        if tenant.queued == 0:  # a new active period: it starts in the current round
            tenant.start, tenant.numbered = lane.round, 0
        tenant.numbered += 1
        share = self._policy.share(request.envelope.tenant)
        round_ = max(lane.round, tenant.start + math.ceil(tenant.numbered / share) - 1)
        self._rounds[sequence] = round_
        self._push(lane, round_, entry)

    def _push(self, lane: _Lane, round_: int, entry: Entry) -> None:
        sequence, request = entry
        heapq.heappush(lane.heap, (round_, sequence, request))
        lane.tenants.setdefault(request.envelope.tenant, _Tenant()).queued += 1
        self._size += 1

    def _next_lane(self) -> _Lane | None:
        aging = self._policy.aging_s
        best: tuple[float, int] | None = None
        chosen = None
        for lane in self._lanes.values():
            if lane.heap:
                key = (lane.heap[0][2].fetched_monotonic + lane.rank * aging, lane.rank)
                if best is None or key < best:
                    best, chosen = key, lane
        return chosen

    def first(self) -> Entry:
        """The entry ``pop`` would return (the queue must not be empty)."""
        lane = self._next_lane()
        assert lane is not None
        _round, sequence, request = lane.heap[0]
        return sequence, request

    def pop(self) -> Entry:
        lane = self._next_lane()
        assert lane is not None
        _round, sequence, request = heapq.heappop(lane.heap)
        lane.tenants[request.envelope.tenant].queued -= 1
        self._size -= 1
        return sequence, request

    def restore(self, entries: list[Entry]) -> None:
        """Put popped entries back with the rounds they had."""
        for entry in entries:
            self._push(self._lanes[entry[1].envelope.priority], self._rounds[entry[0]], entry)

    def served(self, entries: list[Entry]) -> None:
        """Popped entries that left the queue (run, or expired): their lanes' rounds move on."""
        for sequence, request in entries:
            lane = self._lanes[request.envelope.priority]
            lane.round = max(lane.round, self._rounds.pop(sequence, lane.round))
            self._forget_if_idle(lane, request.envelope.tenant)

    def _forget_if_idle(self, lane: _Lane, tenant: str | None) -> None:
        """A tenant with nothing queued starts a new active period when it comes back, so
        its state can go: any producer can name new tenants, and they must not pile up."""
        state = lane.tenants.get(tenant)
        if state is not None and state.queued == 0:
            del lane.tenants[tenant]

    def remove_if(self, predicate: Callable[[PendingRequest], bool]) -> list[Entry]:
        """Remove and return the queued entries matching ``predicate``."""
        removed: list[Entry] = []
        for lane in self._lanes.values():
            kept = [item for item in lane.heap if not predicate(item[2])]
            if len(kept) == len(lane.heap):
                continue
            for _round, sequence, request in lane.heap:
                if predicate(request):
                    removed.append((sequence, request))
                    lane.tenants[request.envelope.tenant].queued -= 1
                    self._rounds.pop(sequence, None)
                    self._forget_if_idle(lane, request.envelope.tenant)
            heapq.heapify(kept)
            lane.heap = kept
        self._size -= len(removed)
        return removed
