"""OffsetTracker: which offsets may be committed, given which requests are answered.

At-least-once: a partition's committed offset only ever moves past records whose results
are stored. Records of one partition are tracked in fetch order; the commit point is the
first one not yet answered. Each assignment of a partition gets a new epoch, so an answer
for a record fetched under an earlier assignment never moves the new one's offset.

The tracker is also the one count of what the worker holds: records fetched and neither
answered nor abandoned (left to the partition's next owner at a rebalance), and their
bytes. Back-pressure and rebalances wait on it (``wait_until``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple


class TopicPartition(NamedTuple):
    """Same shape as aiokafka's TopicPartition (which is also a NamedTuple)."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class OffsetToken:
    """Identifies one fetched record for the tracker; ``size`` is its value's bytes."""

    partition: TopicPartition
    epoch: int
    offset: int
    size: int = 0
    #: The record's identity across deliveries, for attempt counts: topic/partition/offset.
    record_id: str = ""

    def __post_init__(self) -> None:
        if not self.record_id:
            record_id = f"{self.partition.topic}/{self.partition.partition}/{self.offset}"
            object.__setattr__(self, "record_id", record_id)


@dataclass(slots=True)
class _PartitionState:
    epoch: int
    in_order: deque[int] = field(default_factory=deque)
    answered: set[int] = field(default_factory=set)
    abandoned: int = 0  # tracked records this worker will not answer (left to the next owner)
    held_bytes: int = 0  # bytes of the records neither answered nor abandoned
    commit_point: int | None = None  # next offset to commit, once some progress was made
    committed: int | None = None
    revoking: bool = False  # being given up: nothing more of it may start

    def live(self) -> int:
        return len(self.in_order) - len(self.answered) - self.abandoned


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._next_epoch = 1
        self._changed = asyncio.Event()

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            self._partitions[TopicPartition(*partition)] = _PartitionState(self._next_epoch)
            self._next_epoch += 1

    def start_revoking(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions are being given up: ``is_current`` is False for their records from
        now on (nothing more of them starts), while answers still count until ``revoke``."""
        for state in self._states(partitions):
            state.revoking = True

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            self._partitions.pop(TopicPartition(*partition), None)
        self._changed.set()

    def assigned(self) -> list[TopicPartition]:
        return list(self._partitions)

    def track(self, partition: TopicPartition, offset: int, size: int = 0) -> OffsetToken:
        """Register a fetched record. A record of an unassigned partition gets a dead token."""
        key = TopicPartition(*partition)
        state = self._partitions.get(key)
        if state is None:
            return OffsetToken(key, 0, offset, size)
        state.in_order.append(offset)
        state.held_bytes += size
        return OffsetToken(key, state.epoch, offset, size)

    def _current(self, token: OffsetToken) -> _PartitionState | None:
        state = self._partitions.get(token.partition)
        return state if state is not None and state.epoch == token.epoch else None

    def answer(self, token: OffsetToken) -> None:
        """The record's result is stored; ignored if its partition was reassigned since."""
        state = self._current(token)
        if state is None:
            return
        state.answered.add(token.offset)
        state.held_bytes -= token.size
        while state.in_order and state.in_order[0] in state.answered:
            offset = state.in_order.popleft()
            state.answered.discard(offset)
            state.commit_point = offset + 1
        self._changed.set()

    def abandon(self, token: OffsetToken) -> None:
        """This worker will not answer the record (its partition is being revoked): it stops
        counting as held, and the commit point never passes it."""
        state = self._current(token)
        if state is None:
            return
        state.abandoned += 1
        state.held_bytes -= token.size
        self._changed.set()

    def is_current(self, token: OffsetToken) -> bool:
        """Whether the record's partition is still this worker's under the assignment it was
        fetched in, and not being given up: only then may its request start."""
        state = self._current(token)
        return state is not None and not state.revoking

    def _states(self, partitions: Iterable[TopicPartition] | None) -> list[_PartitionState]:
        if partitions is None:
            return list(self._partitions.values())
        found = (self._partitions.get(TopicPartition(*p)) for p in partitions)
        return [state for state in found if state is not None]

    def unanswered(self, partitions: Iterable[TopicPartition] | None = None) -> int:
        """Records fetched and neither answered nor abandoned."""
        return sum(state.live() for state in self._states(partitions))

    def held_bytes(self) -> int:
        """The bytes of those records' values."""
        return sum(state.held_bytes for state in self._partitions.values())

    def position(self, partition: TopicPartition) -> int | None:
        """The first offset of ``partition`` not yet answered (None if none was fetched)."""
        state = self._partitions.get(TopicPartition(*partition))
        if state is None:
            return None
        return state.in_order[0] if state.in_order else state.commit_point

    def backlog(self, partition: TopicPartition, end: int) -> int | None:
        """Records of ``partition`` not yet answered, given its end offset ``end``: those
        held (fetched, unanswered) plus those not fetched yet. Unlike ``end - position``,
        records answered out of order past the first unanswered one do not count."""
        state = self._partitions.get(TopicPartition(*partition))
        if state is None:
            return None
        next_fetch = state.in_order[-1] + 1 if state.in_order else state.commit_point
        if next_fetch is None:
            return None
        return state.live() + max(0, end - next_fetch)

    def committable(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """Offsets to commit: partitions whose commit point moved since the last commit."""
        keys = self._partitions if partitions is None else [TopicPartition(*p) for p in partitions]
        offsets: dict[TopicPartition, int] = {}
        for key in keys:
            state = self._partitions.get(key)
            if state and state.commit_point is not None and state.commit_point != state.committed:
                offsets[key] = state.commit_point
        return offsets

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for key, offset in offsets.items():
            state = self._partitions.get(key)
            if state is not None:
                state.committed = offset

    async def wait_until(
        self, condition: Callable[[], bool], timeout_s: float | None = None
    ) -> bool:
        """Wait until ``condition()`` holds, re-checking whenever a record is answered or
        abandoned or a partition revoked; False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return condition()
        return True
