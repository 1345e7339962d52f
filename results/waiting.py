"""RedisWaiter: the state of one wait on many results in Redis, on any topology.

It subscribes to each id's done channel first and reads the stored results second, so a
result written before the subscription is found too. A notification is only a hint to
read the key again; a periodic re-read covers notifications that were lost, and a lost
connection (a failover included) is rebuilt, with back-off, until the caller's deadline.
How it subscribes is the topology's (``Topology.notifications``): plain pub/sub on one
primary, sharded pub/sub on a Redis >= 7 cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redis.asyncio.client import PubSub

from inferpool.backoff import Backoff
from inferpool.errors import InferpoolError, ResultStoreUnavailable, ResultTimeout
from inferpool.protocol import ResultKeys, ResultRecord, decode_result
from results.notifications import Notifications
from results.redis_client import STORE_ERRORS, credentials_refused, refused_login, unavailable
from results.store import missing_ids
from results.topology import Topology

SUBSCRIBE_CHUNK = 500
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0
#: Ids re-read per poll interval by the safety-net sweep of a wait on many ids.
SWEEP_IDS_PER_INTERVAL = 1000


class RedisWaiter:
    """The state of one ``wait_many``: the ids left, the notifications that hear of them, and
    when to re-read them all (after a (re)subscribe, every poll interval)."""

    def __init__(
        self,
        topology: Topology,
        keys: ResultKeys,
        request_ids: list[str],
        poll_interval_s: float,
        log: Any,
    ) -> None:
        self._topology = topology
        self._log = log
        self._keys = keys
        self._poll_interval_s = poll_interval_s
        self.remaining = set(request_ids)
        self._by_channel = {keys.done_channel(rid).encode(): rid for rid in request_ids}
        self._notifications: Notifications | None = None
        self._next_poll = 0.0
        self._backoff = Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S)
        self.unavailable: Exception | None = None  # the error, while Redis is unreachable

    async def next_results(self, deadline: float) -> list[ResultRecord] | None:
        """Results that arrived since the last call (maybe none); None once past ``deadline``.

        A lost connection is logged and rebuilt after a back-off, never raised.
        """
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            return None
        try:
            async with asyncio.timeout_at(deadline):
                found = await self._step(loop)
        except Exception as error:  # the deadline's TimeoutError is an OSError too
            if refused_login(error):
                raise credentials_refused("result wait") from None
            if not unavailable(error):
                raise
            if loop.time() >= deadline:
                return None
            self.unavailable = error
            self._log.warning(
                "results.wait_reconnect",
                error=type(error).__name__,
                remaining=len(self.remaining),
                backoff_s=self._backoff.upcoming_s,
            )
            await self.close()
            await self._backoff.sleep(at_most_s=deadline - loop.time())
            return []
        self._backoff.reset()
        self.unavailable = None
        return found

    async def _step(self, loop: asyncio.AbstractEventLoop) -> list[ResultRecord]:
        hinted: set[str]
        if self._notifications is None:
            await self._subscribe()
            hinted, resync = set(), True
        else:
            channels, resync = await self._notifications.hints(self._next_poll - loop.time())
            hinted = {self._by_channel[c] for c in channels if c in self._by_channel}
        found = await self._fetch(hinted)
        if resync or loop.time() >= self._next_poll:
            found += await self._fetch(self.remaining)
            # The sweep is a safety net (notifications are the fast path): its period grows
            # with the ids left, so a wait on many ids does not flood Redis with GETs.
            scale = max(1.0, len(self.remaining) / SWEEP_IDS_PER_INTERVAL)
            self._next_poll = loop.time() + self._poll_interval_s * scale
        return found

    async def _subscribe(self) -> None:
        """Fresh notifications on every remaining id's channel, confirmed by Redis."""
        after_error = self.unavailable is not None
        self._notifications = await self._topology.notifications(after_error)
        await self._notifications.subscribe([self._keys.done_channel(r) for r in self.remaining])

    async def _fetch(self, request_ids: Iterable[str]) -> list[ResultRecord]:
        """The results of those ids (still remaining) that have one; they are done."""
        wanted = [rid for rid in request_ids if rid in self.remaining]
        if not wanted:
            return []
        pipe = self._topology.client.pipeline(transaction=False)
        for rid in wanted:
            pipe.get(self._keys.result(rid))
        values: list[bytes | None] = await pipe.execute()
        found: list[ResultRecord] = []
        for rid, raw in zip(wanted, values, strict=True):
            if raw is not None:
                found.append(decode_result(rid, raw))
                self.remaining.discard(rid)
        return found

    async def close(self) -> None:
        notifications, self._notifications = self._notifications, None
        if notifications is not None:
            await notifications.close()


class ChannelNotifications(Notifications):
    """Plain pub/sub on one connection, from ``open_pubsub`` (``client.pubsub``)."""

    def __init__(self, open_pubsub: Callable[[], PubSub]) -> None:
        self._open_pubsub = open_pubsub
        self._pubsub: PubSub | None = None

    async def subscribe(self, channels: Sequence[str]) -> None:
        pubsub = self._pubsub = self._open_pubsub()
        for start in range(0, len(channels), SUBSCRIBE_CHUNK):
            await pubsub.subscribe(*channels[start : start + SUBSCRIBE_CHUNK])
        confirmed = 0
        while confirmed < len(channels):
            message = await pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "subscribe":
                confirmed += 1

    async def hints(self, timeout_s: float) -> tuple[set[bytes], bool]:
        """A subscribe confirmation here means the client reconnected on its own."""
        assert self._pubsub is not None, "subscribe first"
        hinted: set[bytes] = set()
        resync = False
        message: Any = await self._pubsub.get_message(timeout=max(timeout_s, 0))
        while message is not None:
            if message["type"] == "message":
                hinted.add(message["channel"])
            elif message["type"] == "subscribe":
                resync = True
            message = await self._pubsub.get_message(timeout=0)
        return hinted, resync

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*STORE_ERRORS):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def many_timeout(waiter: RedisWaiter, total: int, timeout_s: float) -> InferpoolError:
    """ResultTimeout; or ResultStoreUnavailable when Redis was unreachable at the end."""
    missing = waiter.remaining
    examples = missing_ids(missing)
    if waiter.unavailable is not None:
        return ResultStoreUnavailable(
            f"result store (Redis) still unreachable after waiting {timeout_s:g}s for "
            f"{len(missing)} of {total} results (e.g. {examples}); check that Redis is "
            "up and INFERPOOL_REDIS_URL points at it, then wait again"
        )
    return ResultTimeout(
        f"{len(missing)} of {total} results did not arrive within {timeout_s:g}s "
        f"(e.g. {examples}); they may still be pending, or unknown (never submitted "
        "or expired): look them up later with 'inferpool result ID'"
    )
