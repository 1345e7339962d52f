"""Notifications: how a wait hears that a result was written, whatever the Redis topology.

A notification is a hint to read a result key again, never the truth: a wait that hears
none still finds its results by re-reading. ``results.waiting.ChannelNotifications`` is
plain pub/sub (``SUBSCRIBE``, told by ``PUBLISH``): one Redis primary (standalone or
Sentinel-managed), or a Redis Cluster before Redis 7, where a ``PUBLISH`` reaches every
node. ``results.sharded_pubsub`` is the Redis >= 7 cluster's sharded pub/sub.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence


class Notifications(abc.ABC):
    """One wait's subscription to the done channels of the results it still waits for."""

    @abc.abstractmethod
    async def subscribe(self, channels: Sequence[str]) -> None:
        """Subscribe to ``channels``; returns once Redis confirmed every one of them. Raises
        the Redis client's connection errors (the caller backs off and subscribes again)."""

    @abc.abstractmethod
    async def hints(self, timeout_s: float) -> tuple[set[bytes], bool]:
        """The channels that spoke within ``timeout_s`` (returns at the first), and whether
        every id must be re-read: the subscription was rebuilt or lost some channels."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Unsubscribe and release the connections; never raises a connection error."""
