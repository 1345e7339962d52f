"""SinglePrimary: the store's Topology on one Redis primary, standalone or behind Sentinel.

Every batch script is one ``EVALSHA`` over the whole batch (redis-py loads the script again
after a ``NOSCRIPT``: a restarted or newly promoted primary has an empty script cache), and
waits use plain pub/sub. With Sentinel, the client asks the sentinels for the primary on
every new connection, so after a failover the next retry reaches the new one.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from results.notifications import Notifications
from results.redis_client import close_redis
from results.topology import Arg, BatchScript, GroupReply, Item, Topology
from results.waiting import ChannelNotifications


class SinglePrimary(Topology):
    def __init__(self, client: Redis) -> None:
        self._client = client
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def client(self) -> Redis:
        return self._client

    async def run(
        self, script: BatchScript, shared: Sequence[Arg], items: Sequence[Item]
    ) -> list[GroupReply]:
        registered = self._scripts.get(script.name)
        if registered is None:
            registered = self._scripts[script.name] = self._client.register_script(script.single)
        keys = [key for item in items for key in item.keys]
        args = [*shared, *(arg for item in items for arg in item.args)]
        reply = await registered(keys=keys, args=args)
        return [GroupReply(tuple(range(len(items))), reply)]

    async def notifications(self, after_error: bool = False) -> Notifications:
        return ChannelNotifications(self._client.pubsub)

    async def close(self) -> None:
        await close_redis(self._client)
