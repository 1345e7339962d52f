"""RedisWaiter: the state of one wait on many results in Redis.

It subscribes to each id's done channel first and reads the stored results second, so a
result written before the subscription is found too. A notification is only a hint to
read the key again; a periodic re-read covers notifications that were lost, and a lost
connection is rebuilt (with back-off) until the caller's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from inferpool.backoff import Backoff
from inferpool.errors import InferpoolError, ResultStoreUnavailable, ResultTimeout
from inferpool.protocol import ResultKeys, ResultRecord, decode_result
from results.redis_client import STORE_ERRORS, credentials_refused
from results.store import missing_ids

SUBSCRIBE_CHUNK = 500
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0
#: Ids re-read per poll interval by the safety-net sweep of a wait on many ids.
SWEEP_IDS_PER_INTERVAL = 1000


class RedisWaiter:
    """The state of one ``wait_many``: the ids left, the pubsub that hears of them, and when
    to re-read them all (after a (re)subscribe, every poll interval)."""

    def __init__(
        self,
        client: Redis,
        keys: ResultKeys,
        request_ids: list[str],
        poll_interval_s: float,
        log: Any,
    ) -> None:
        self._client = client
        self._log = log
        self._keys = keys
        self._poll_interval_s = poll_interval_s
        self.remaining = set(request_ids)
        self._by_channel = {keys.done_channel(rid).encode(): rid for rid in request_ids}
        self._pubsub: PubSub | None = None
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
        except redis.exceptions.AuthenticationError:
            raise credentials_refused("result wait") from None
        except STORE_ERRORS as error:  # the deadline's TimeoutError is an OSError too
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
        if self._pubsub is None:
            await self._subscribe()
            hinted, resync = set(), True
        else:
            hinted, resync = await self._hints(self._next_poll - loop.time())
        found = await self._fetch(hinted)
        if resync or loop.time() >= self._next_poll:
            found += await self._fetch(self.remaining)
            # The sweep is a safety net (notifications are the fast path): its period grows
            # with the ids left, so a wait on many ids does not flood Redis with GETs.
            scale = max(1.0, len(self.remaining) / SWEEP_IDS_PER_INTERVAL)
            self._next_poll = loop.time() + self._poll_interval_s * scale
        return found

    async def _subscribe(self) -> None:
        """A fresh pubsub on every remaining id's channel; returns once Redis confirmed all."""
        pubsub = self._pubsub = self._client.pubsub()
        channels = [self._keys.done_channel(rid) for rid in self.remaining]
        for start in range(0, len(channels), SUBSCRIBE_CHUNK):
            await pubsub.subscribe(*channels[start : start + SUBSCRIBE_CHUNK])
        confirmed = 0
        while confirmed < len(channels):
            message = await pubsub.get_message(timeout=None)
            if message is not None and message["type"] == "subscribe":
                confirmed += 1

    async def _hints(self, timeout_s: float) -> tuple[set[str], bool]:
        """Ids whose done channel spoke within ``timeout_s``, and whether to re-read all:
        a subscribe confirmation here means the client reconnected on its own."""
        assert self._pubsub is not None
        hinted: set[str] = set()
        resync = False
        message: Any = await self._pubsub.get_message(timeout=max(timeout_s, 0))
        while message is not None:
            if message["type"] == "message":
                rid = self._by_channel.get(message["channel"])
                if rid is not None:
                    hinted.add(rid)
            elif message["type"] == "subscribe":
                resync = True
            message = await self._pubsub.get_message(timeout=0)
        return hinted, resync

    async def _fetch(self, request_ids: Iterable[str]) -> list[ResultRecord]:
        """The results of those ids (still remaining) that have one; they are done."""
        wanted = [rid for rid in request_ids if rid in self.remaining]
        if not wanted:
            return []
        pipe = self._client.pipeline(transaction=False)
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
