"""Topology: what differs between one Redis primary and a Redis Cluster, for the store.

``RedisResultStore`` is written once against this interface: ``client`` for single-key
commands and pipelines (redis-py's ``Redis`` or ``RedisCluster``, which routes each key to
its node and follows MOVED/ASK), ``run`` for the worker's batch scripts, ``notifications``
for waits. ``results.primary`` is one primary (standalone or found through Sentinel),
``results.cluster`` a Redis Cluster; ``results.connect`` picks one from the URL.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from results.notifications import Notifications

Arg = bytes | str | int


@dataclass(frozen=True, slots=True)
class BatchScript:
    """One of the worker's batch scripts (``results.scripts``), in both layouts: ``single``
    declares every request's keys (KEYS) and takes ``shared`` then every request's args
    (ARGV); ``cluster`` takes ``shared`` then each request's keys and args in ARGV."""

    name: str
    single: str
    cluster: Template
    #: Its writes must reach ``RedisSettings.wait_replicas`` replicas before it returns.
    replicated: bool = False


@dataclass(frozen=True, slots=True)
class Item:
    """One request's part of a script call: its keys (one hash slot) and its values."""

    keys: tuple[str, ...]
    args: tuple[Arg, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupReply:
    """What the script answered for the items at ``indexes`` (positions in the call)."""

    indexes: tuple[int, ...]
    reply: Any


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
        self, script: BatchScript, shared: Sequence[Arg], items: Sequence[Item]
    ) -> list[GroupReply]:
        """Run ``script`` over every item, in as few commands as the topology allows (one
        on a primary; one per node on a cluster, sent to all nodes at once). Raises the
        client's errors: a group may have run when another failed, so the caller retries
        the whole call (each script is safe to run again but for its counts)."""

    @abc.abstractmethod
    async def notifications(self, after_error: bool = False) -> Notifications:
        """A fresh, unsubscribed Notifications for one wait; ``after_error``: the last one
        of this wait failed (a cluster re-reads its slot map first)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection."""
