"""LaneGate: fetching lanes by weight, by pausing and resuming their partitions.

Each lane may hold at most its share of ``max_inflight_requests`` (fetched and not yet
answered): high all of it, normal ``lane_share_normal``, low ``lane_share_low``. A lane at
its share has its partitions paused until it falls below, so a backlog of low requests
never fills the worker and high requests are always fetched at once. The order inside
the worker is then the batcher's (``ServiceOrder``: high first, with aging).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from inferpool.protocol import Priority, lane_of_topic
from worker.offsets import OffsetTracker, TopicPartition


class PartitionSwitch(Protocol):
    """What the gate needs from the consumer (``RequestConsumer``)."""

    def pause(self, partitions: Sequence[TopicPartition]) -> None: ...

    def resume(self, partitions: Sequence[TopicPartition]) -> None: ...


class LaneGate:
    def __init__(
        self,
        consumer: PartitionSwitch,
        tracker: OffsetTracker,
        max_inflight_requests: int,
        shares: Mapping[Priority, float],
    ) -> None:
        self._consumer = consumer
        self._tracker = tracker
        self._caps = {
            lane: max(1, math.ceil(max_inflight_requests * shares.get(lane, 1.0)))
            for lane in Priority
        }
        self._paused: set[TopicPartition] = set()
        self._lanes: dict[str, Priority] = {}  # topic -> its lane, parsed once

    def cap(self, lane: Priority) -> int:
        return self._caps[lane]

    def update(self) -> bool:
        """Pause the lanes at their share, resume the others (call before each fetch);
        whether some lane is paused now."""
        by_lane: dict[Priority, list[TopicPartition]] = {lane: [] for lane in Priority}
        for partition in self._tracker.assigned():
            lane = self._lanes.get(partition.topic)
            if lane is None:
                lane = self._lanes[partition.topic] = lane_of_topic(partition.topic)
            by_lane[lane].append(partition)
        pause: list[TopicPartition] = []
        resume: list[TopicPartition] = []
        for lane, partitions in by_lane.items():
            if not partitions:
                continue
            full = self._tracker.unanswered(partitions) >= self._caps[lane]
            (pause if full else resume).extend(partitions)
        if pause:
            self._consumer.pause(pause)
        if resumable := [p for p in resume if p in self._paused]:
            self._consumer.resume(resumable)
        self._paused = (self._paused - set(resume)) | set(pause)
        return bool(pause)
