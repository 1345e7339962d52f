"""Topology: what differs between one Redis primary and a Redis Cluster, for the store.

``RedisResultStore`` is written once against this interface: ``client`` for single-key
commands and pipelines (redis-py's ``Redis`` or ``RedisCluster``, which routes each key to
its node and follows MOVED/ASK), ``run`` for the worker's batch scripts, ``notifications``
for waits. ``results.primary`` is one primary (standalone or found through Sentinel),
``results.cluster`` a Redis Cluster; ``results.connect`` picks one from the URL.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from results.notifications import Notifications

Arg = bytes | str | int


@dataclass(frozen=True, slots=True)
class Item:
    """One key of a script call (its slot decides its node), with the values that go with it."""

    key: str
    args: tuple[Arg, ...] = ()


#: A script call's items, in sections (e.g. results to store, then attempts to drop).
Sections = Sequence[Sequence[Item]]
#: A script's KEYS and ARGV.
Packed = tuple[list[str], list[Arg]]


@dataclass(frozen=True, slots=True)
class BatchScript:
    """One of the worker's batch scripts (``results.scripts``): its source, and ``pack``,
    which lays out some items of each section (and the shared values) as its KEYS and ARGV;
    a cluster calls it once per group of items."""

    name: str
    source: str
    pack: Callable[[Sequence[Arg], Sections], Packed]
    #: Its writes must reach ``RedisSettings.wait_replicas`` replicas before it returns.
    replicated: bool = False


@dataclass(frozen=True, slots=True)
class GroupReply:
    """What the script answered for the items at ``indexes`` ((section, position) pairs, in
    the order they were packed); ``indexes`` None: every item of sections of ``lengths``
    (one call covered the whole batch, the usual case: nothing is built per item)."""

    indexes: tuple[tuple[int, int], ...] | None
    reply: Any
    lengths: tuple[int, ...] = ()

    def positions(self, section: int) -> list[int]:
        """The positions in ``section`` this reply covers, in order."""
        if self.indexes is None:
            return list(range(self.lengths[section]))
        return [position for s, position in self.indexes if s == section]


class Topology(abc.ABC):
    """A connected Redis deployment; closed by ``close``."""

    #: Publish command the scripts use; a wait subscribes to match (``notifications``).
    sharded_pubsub = False

    @property
    @abc.abstractmethod
    def client(self) -> Redis | RedisCluster:
        """For single-key commands and non-transactional pipelines."""

    @abc.abstractmethod
    async def run(
        self, script: BatchScript, shared: Sequence[Arg], sections: Sections
    ) -> list[GroupReply]:
        """Run ``script`` over every item, in as few commands as the topology allows (one
        on a primary; one per node on a cluster, sent to all nodes at once). Raises the
        client's errors: a group may have run when another failed, so the caller retries
        the whole call (each script is safe to run again but for its counts)."""

    async def publish_command(self) -> str:
        """What the scripts notify with: PUBLISH, or SPUBLISH on a cluster that has it."""
        return "PUBLISH"

    @abc.abstractmethod
    async def notifications(self, after_error: bool = False) -> Notifications:
        """A fresh, unsubscribed Notifications for one wait; ``after_error``: the last one
        of this wait failed (a cluster re-reads its slot map first)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection."""
