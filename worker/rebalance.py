"""Rebalance: what a worker does when the group gives it partitions or takes them away.

Revocation, in order: nothing more of the partitions starts (the tracker marks them
revoking, so admission lets go of what it still prepares); the engines' queued requests of
them are discarded, left for the next owner; the requests already started are awaited
(up to the drain timeout) and settled as usual; what is answered is committed; only then
are the partitions dropped. So a clean rebalance runs nothing twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

from inferpool.logs import get_logger
from worker.engine import Engine
from worker.offsets import OffsetTracker, TopicPartition
from worker.settlement.commits import Committer

log = get_logger("worker.rebalance")


class Rebalance:
    def __init__(
        self,
        worker_id: str,
        tracker: OffsetTracker,
        engines: Iterable[Engine],
        committer: Committer,
        preparing: Counter[TopicPartition],
        drain_timeout_s: float,
    ) -> None:
        self._worker_id = worker_id
        self._tracker = tracker
        self._engines = list(dict.fromkeys(engines))
        self._committer = committer
        self._drain_timeout_s = drain_timeout_s
        self._preparing = preparing  # records admission holds in preparation (not started)
        self.assigned = asyncio.Event()  # set once the group gave this worker partitions

    async def on_assigned(self, partitions: list[TopicPartition]) -> None:
        self._tracker.assign(partitions)
        log.info("rebalance.assigned", worker=self._worker_id,
                 partitions=[list(p) for p in partitions])
        self.assigned.set()

    async def on_revoked(self, partitions: list[TopicPartition]) -> None:
        revoked = set(partitions)
        self._tracker.start_revoking(partitions)
        left = [r for e in self._engines for r in e.discard(lambda r: r.token.partition in revoked)]
        for request in left:
            self._tracker.abandon(request.token)

        def started_ones_settled() -> bool:
            preparing = sum(self._preparing[p] for p in partitions)
            return self._tracker.unanswered(partitions) <= preparing

        if not await self._tracker.wait_until(started_ones_settled, self._drain_timeout_s):
            log.warning("rebalance.in_flight_abandoned", worker=self._worker_id)
        await self._committer.commit(partitions)
        self._tracker.revoke(partitions)
        log.info(
            "rebalance.revoked",
            worker=self._worker_id,
            partitions=[list(p) for p in partitions],
            left_for_next_owner=len(left),
        )
