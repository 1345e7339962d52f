"""ShardedNotifications: a wait's notifications on a Redis >= 7 cluster (sharded pub/sub).

A done channel carries its request's hash tag, so it lives in the slot of the result key,
and the worker's ``SPUBLISH`` reaches only the shard (primary and replicas) owning that
slot, not the whole cluster as a ``PUBLISH`` would. A wait therefore subscribes
(``SSUBSCRIBE``, one command per channel: channels of different slots cannot share one) on
the primary of each channel's slot, one connection per primary, and a listener task per
connection hands what it hears to one queue.

A lost connection, or channels dropped by the server (it sends ``sunsubscribe`` when their
slot leaves the node), ends the subscription with a ConnectionError: the waiter backs off,
subscribes again on a freshly read slot map, and re-reads every result it still waits for.
The connections do not reconnect on their own (redis-py would resubscribe every channel in
one command, which a cluster refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from results.notifications import Notifications
from results.redis_client import STORE_ERRORS, slot_owner

#: How long a listener's read waits before it looks again (it is cancelled when closed).
LISTEN_POLL_S = 1.0


class SubscriptionLost(redis.exceptions.ConnectionError):
    """A node dropped our shard channels (their slot moved): subscribe again."""


class ShardedNotifications(Notifications):
    """``node_client(host, port)`` gives a client of one node (its pool lends the
    connection)."""

    def __init__(self, cluster: RedisCluster, node_client: Callable[[str, int], Redis]) -> None:
        self._cluster = cluster
        self._node_client = node_client
        self._pubsubs: list[PubSub] = []
        self._listeners: list[asyncio.Task[None]] = []
        self._heard: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    async def subscribe(self, channels: Sequence[str]) -> None:
        by_node: dict[tuple[str, int], list[str]] = defaultdict(list)
        for channel in channels:
            node = slot_owner(self._cluster, channel)
            by_node[(node.host, int(node.port))].append(channel)
        pubsubs = [self._node_client(host, port).pubsub() for host, port in by_node]
        self._pubsubs = pubsubs
        await asyncio.gather(*map(_subscribe_all, pubsubs, by_node.values()))
        self._listeners = [asyncio.create_task(self._listen(pubsub)) for pubsub in pubsubs]

    async def _listen(self, pubsub: PubSub) -> None:
        try:
            while True:
                message: Any = await pubsub.get_message(timeout=LISTEN_POLL_S)
                if message is None:
                    continue
                if message["type"] == "smessage":
                    self._heard.put_nowait(message["channel"])
                elif message["type"] == "sunsubscribe":
                    raise SubscriptionLost("shard channels moved to another node")
        except STORE_ERRORS as error:
            self._heard.put_nowait(error)

    async def hints(self, timeout_s: float) -> tuple[set[bytes], bool]:
        assert self._listeners, "subscribe first"
        hinted: set[bytes] = set()
        if self._heard.empty():
            try:
                async with asyncio.timeout(max(timeout_s, 0)):
                    heard = await self._heard.get()
            except TimeoutError:
                return hinted, False
        else:
            heard = self._heard.get_nowait()
        while True:
            if isinstance(heard, Exception):
                raise heard
            hinted.add(heard)
            if self._heard.empty():
                return hinted, False
            heard = self._heard.get_nowait()

    async def close(self) -> None:
        listeners, self._listeners = self._listeners, []
        pubsubs, self._pubsubs = self._pubsubs, []
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for pubsub in pubsubs:
            with contextlib.suppress(*STORE_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


async def _subscribe_all(pubsub: PubSub, channels: list[str]) -> None:
    """``SSUBSCRIBE`` each channel (one slot per command); returns once all are confirmed."""
    for channel in channels:
        await pubsub.ssubscribe(channel)
    confirmed = 0
    while confirmed < len(channels):
        message: Any = await pubsub.get_message(timeout=None)
        if message is not None and message["type"] == "ssubscribe":
            confirmed += 1
