"""OffsetTracker: which offsets may be committed, given which requests are answered.

At-least-once: a partition's committed offset only ever moves past records whose results
are in Redis. Records of one partition are tracked in fetch order; the commit point is
the first one not yet answered. Each assignment of a partition gets a new epoch, so an
answer for a record fetched under an earlier assignment never moves the new one's offset.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple


class TopicPartition(NamedTuple):
    """Same shape as aiokafka's TopicPartition (which is also a NamedTuple)."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class OffsetToken:
    """Identifies one fetched record for the tracker."""

    partition: TopicPartition
    epoch: int
    offset: int


@dataclass(slots=True)
class _PartitionState:
    epoch: int
    in_order: deque[int] = field(default_factory=deque)
    answered: set[int] = field(default_factory=set)
    commit_point: int | None = None  # next offset to commit, once some progress was made
    committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._next_epoch = 1

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            self._partitions[TopicPartition(*partition)] = _PartitionState(self._next_epoch)
            self._next_epoch += 1

    def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            self._partitions.pop(TopicPartition(*partition), None)

    def assigned(self) -> list[TopicPartition]:
        return list(self._partitions)

    def track(self, partition: TopicPartition, offset: int) -> OffsetToken:
        """Register a fetched record. A record of an unassigned partition gets a dead token."""
        key = TopicPartition(*partition)
        state = self._partitions.get(key)
        if state is None:
            return OffsetToken(key, 0, offset)
        state.in_order.append(offset)
        return OffsetToken(key, state.epoch, offset)

    def answer(self, token: OffsetToken) -> None:
        """The record's result is stored; ignored if its partition was reassigned since."""
        state = self._partitions.get(token.partition)
        if state is None or state.epoch != token.epoch:
            return
        state.answered.add(token.offset)
        while state.in_order and state.in_order[0] in state.answered:
            offset = state.in_order.popleft()
            state.answered.discard(offset)
            state.commit_point = offset + 1

    def is_current(self, token: OffsetToken) -> bool:
        state = self._partitions.get(token.partition)
        return state is not None and state.epoch == token.epoch

    def unanswered(self, partitions: Iterable[TopicPartition] | None = None) -> int:
        keys = self._partitions if partitions is None else [TopicPartition(*p) for p in partitions]
        return sum(len(self._partitions[k].in_order) for k in keys if k in self._partitions)

    def position(self, partition: TopicPartition) -> int | None:
        """The first offset of ``partition`` not yet answered (None if none was fetched)."""
        state = self._partitions.get(TopicPartition(*partition))
        if state is None:
            return None
        return state.in_order[0] if state.in_order else state.commit_point

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
