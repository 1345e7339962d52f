"""LaneGate: fetching lanes by weight, by choosing which partitions a fetch reads.

Each lane may hold at most its share of ``max_inflight_requests`` (fetched and not yet
answered): high all of it, normal ``lane_share_normal``, low ``lane_share_low``. A lane at
its share is *closed*: fetches read only the other lanes' partitions until it falls below,
so a backlog of low requests never fills the worker and high requests are always fetched
at once. The order inside the worker is then the batcher's (``ServiceOrder``: high first,
with aging).

A closed lane's partitions are left out of the fetch, not paused: aiokafka drops the
records it has prefetched for a partition when it is paused, so every pause cost the broker
a second read of them. Paused at its share and resumed after every batch, a busy lane made
the broker spend 2.2x its CPU per request in the echo benchmark (48 against 22 µs), and 70
% of the worker's fetches came back empty. Left out, its prefetched records wait in the
consumer until the lane opens again (and the consumer's prefetch back-off is shortened so
that the open lanes are fetched meanwhile: ``worker.consumer``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from inferpool.protocol import Priority, lane_of_topic
from worker.offsets import OffsetTracker, TopicPartition


class LaneGate:
    def __init__(
        self,
        tracker: OffsetTracker,
        max_inflight_requests: int,
        shares: Mapping[Priority, float],
    ) -> None:
        self._tracker = tracker
        self._caps = {
            lane: max(1, math.ceil(max_inflight_requests * shares.get(lane, 1.0)))
            for lane in Priority
        }

    def cap(self, lane: Priority) -> int:
        return self._caps[lane]

    def open_partitions(self) -> list[TopicPartition] | None:
        """The assigned partitions the next fetch may read: None when every lane is open
        (read them all), else those of the lanes below their share (maybe none)."""
        by_lane: dict[Priority, list[TopicPartition]] = {}
        for partition in self._tracker.assigned():
            by_lane.setdefault(lane_of_topic(partition.topic), []).append(partition)
        open_: list[TopicPartition] = []
        closed = False
        for lane, partitions in by_lane.items():
            if self._tracker.unanswered(partitions) >= self._caps[lane]:
                closed = True
            else:
                open_ += partitions
        return open_ if closed else None
