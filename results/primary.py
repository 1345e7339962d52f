"""SinglePrimary: the store's Topology on one Redis primary, standalone or behind Sentinel.

Every batch script is one ``EVALSHA`` over the whole batch (redis-py loads the script again
after a ``NOSCRIPT``: a restarted or newly promoted primary has an empty script cache), and
waits use plain pub/sub. With Sentinel, the client asks the sentinels for the primary on
every new connection, so after a failover the next retry reaches the new one.

Replication is asynchronous: a primary acknowledges a write before its replicas have it.
With ``wait_replicas`` > 0 the result script is followed, on the same connection, by
``WAIT wait_replicas wait_timeout_ms``; fewer acknowledgements raise ``ReplicasBehind``
(retriable: the worker tries the batch again and commits nothing meanwhile).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.exceptions
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from results.notifications import Notifications
from results.redis_client import close_redis
from results.topology import Arg, BatchScript, GroupReply, Sections, Topology
from results.waiting import ChannelNotifications


class ReplicasBehind(redis.exceptions.ConnectionError):
    """Fewer replicas than required acknowledged a write in time."""


class SinglePrimary(Topology):
    def __init__(self, client: Redis, wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        self._client = client
        self._scripts: dict[str, AsyncScript] = {}
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms

    @property
    def client(self) -> Redis:
        return self._client

    async def run(
        self, script: BatchScript, shared: Sequence[Arg], sections: Sections
    ) -> list[GroupReply]:
        registered = self._scripts.get(script.name)
        if registered is None:
            registered = self._scripts[script.name] = self._client.register_script(script.source)
        keys, args = script.pack(shared, sections)
        if script.replicated and self._wait_replicas:
            reply = await self._run_replicated(registered, keys, args)
        else:
            reply = await registered(keys=keys, args=args)
        return [GroupReply(None, reply, tuple(len(section) for section in sections))]

    async def _run_replicated(self, script: AsyncScript, keys: list[str], args: list[Arg]) -> Any:
        """The script, then ``WAIT`` on the same connection (it waits for that connection's
        writes; a script always writes: its PUBLISH is replicated too)."""
        connection = self._client.client()  # one pooled connection for both commands
        try:
            reply = await script(keys=keys, args=args, client=connection)
            acked = int(await connection.wait(self._wait_replicas, self._wait_timeout_ms))
        finally:
            await connection.aclose()
        if acked < self._wait_replicas:
            raise ReplicasBehind(
                f"{acked} of {self._wait_replicas} replicas acknowledged the results within "
                f"{self._wait_timeout_ms} ms"
            )
        return reply

    async def notifications(self, after_error: bool = False) -> Notifications:
        return ChannelNotifications(self._client.pubsub)

    async def close(self) -> None:
        await close_redis(self._client)
