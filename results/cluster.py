"""ClusterTopology: the store's Topology on a Redis Cluster (redis-py's ``RedisCluster``).

Every key of one request shares the hash tag ``{id}``, so a request lives in one slot; a
batch spans many. A batch script therefore runs once per node that owns some of the
batch's requests (Redis >= 7: the scripts may cross the slots of one node) or once per
slot (before Redis 7), and those commands go out as one pipeline per node, to every node at
once: a batch costs one round trip per node it touches, whatever its size.

After a failover the client follows MOVED to the new owner of a slot (all of a failed
primary's slots move together, so a node's group stays whole); if a batch meets a slot
that moved apart from the rest of its node (resharding: "non local key"), those requests
are sent again one slot per command. Notifications are sharded pub/sub on Redis >= 7
(``results.sharded_pubsub``), plain pub/sub before.

Scripts are sent with ``EVAL`` rather than ``EVALSHA``: the source is a few hundred bytes
per node per batch, and a newly promoted replica, whose script cache is empty, needs no
``SCRIPT LOAD`` round.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from inferpool.settings import RedisSettings
from results import scripts
from results.notifications import Notifications
from results.redis_client import node_options, open_cluster, slot_owner
from results.sharded_pubsub import ShardedNotifications
from results.topology import Arg, BatchScript, GroupReply, Sections, Topology
from results.waiting import ChannelNotifications

#: What Redis answers a script that touched a key of a slot its node does not own.
NON_LOCAL_KEY = "non local key"


def supports_sharded_pubsub(client: RedisCluster) -> bool:
    """Whether the cluster has ``SPUBLISH`` (Redis >= 7), from its ``COMMAND`` table."""
    return "spublish" in client.commands_parser.commands


class ClusterTopology(Topology):
    def __init__(self, settings: RedisSettings) -> None:
        self._settings = settings
        self._client = open_cluster(settings)
        self._node_clients: dict[tuple[str, int], Redis] = {}
        self._sources: dict[str, str] = {}
        self._ready = False

    @property
    def client(self) -> RedisCluster:
        return self._client

    async def _connect(self) -> None:
        """Read the slot map and the command table once (the client keeps them fresh)."""
        if not self._ready:
            await self._client.initialize()
            self.sharded_pubsub = supports_sharded_pubsub(self._client)
            self._ready = True

    def _source(self, script: BatchScript) -> str:
        source = self._sources.get(script.name)
        if source is None:
            source = scripts.cluster_script(script.source, self.sharded_pubsub)
            self._sources[script.name] = source
        return source

    async def publish_command(self) -> str:
        await self._connect()
        return "SPUBLISH" if self.sharded_pubsub else "PUBLISH"

    async def run(
        self, script: BatchScript, shared: Sequence[Arg], sections: Sections
    ) -> list[GroupReply]:
        await self._connect()
        every = [(s, i) for s, section in enumerate(sections) for i in range(len(section))]
        grouping = self._by_node if self.sharded_pubsub else self._by_slot
        groups = grouping(every, sections)
        replies = await self._send(script, shared, sections, groups, raise_on_error=False)
        done: list[GroupReply] = []
        again: list[Group] = []
        for group, reply in zip(groups, replies, strict=True):
            if isinstance(reply, redis.exceptions.ResponseError) and NON_LOCAL_KEY in str(reply):
                again += self._by_slot(group, sections)
            elif isinstance(reply, Exception):
                raise reply
            else:
                done.append(GroupReply(group, reply))
        if again:
            replies = await self._send(script, shared, sections, again, raise_on_error=True)
            done += [GroupReply(group, reply) for group, reply in zip(again, replies, strict=True)]
        return done

    def _by_node(self, indexes: Iterable[Index], sections: Sections) -> list[Group]:
        return _grouped(indexes, lambda at: slot_owner(self._client, _key(sections, at)).name)

    def _by_slot(self, indexes: Iterable[Index], sections: Sections) -> list[Group]:
        return _grouped(indexes, lambda at: self._client.keyslot(_key(sections, at)))

    async def _send(
        self,
        script: BatchScript,
        shared: Sequence[Arg],
        sections: Sections,
        groups: list[Group],
        raise_on_error: bool,
    ) -> list[Any]:
        source = self._source(script)
        pipe = self._client.pipeline(transaction=False)
        for group in groups:
            picked = [[sections[s][i] for s, i in group if s == section]
                      for section in range(len(sections))]
            keys, args = script.pack(shared, picked)
            # the group's first key routes the command; the prelude reads the keys from ARGV
            pipe.execute_command("EVAL", source, 1, keys[0], *scripts.cluster_args(keys, args))
        replies: list[Any] = await pipe.execute(raise_on_error=raise_on_error)
        return replies

    async def notifications(self, after_error: bool = False) -> Notifications:
        await self._connect()
        if after_error:
            await self._client.nodes_manager.initialize()
        if self.sharded_pubsub:
            return ShardedNotifications(self._client, self._node_client)
        return ChannelNotifications(self._client.pubsub)

    def _node_client(self, host: str, port: int) -> Redis:
        """A client of one node for sharded subscriptions: one pool per node, kept."""
        client = self._node_clients.get((host, port))
        if client is None:
            options = node_options(self._settings, self._settings.endpoints())
            options["retry"] = Retry(NoBackoff(), 0)  # a lost subscription is rebuilt by the wait
            client = self._node_clients[(host, port)] = Redis(host=host, port=port, **options)
        return client

    async def close(self) -> None:
        clients, self._node_clients = list(self._node_clients.values()), {}
        for client in clients:
            await client.aclose()
        await self._client.aclose()


Index = tuple[int, int]  # (section, position)
Group = tuple[Index, ...]


def _key(sections: Sections, at: Index) -> str:
    return sections[at[0]][at[1]].key


def _grouped(indexes: Iterable[Index], key: Callable[[Index], object]) -> list[Group]:
    """The indexes grouped by ``key``, each group in section order (as the script packs)."""
    groups: dict[object, list[Index]] = defaultdict(list)
    for index in indexes:
        groups[key(index)].append(index)
    return [tuple(sorted(group)) for group in groups.values()]
