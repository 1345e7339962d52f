"""ResultReader: look a request up, or wait for results as they are written.

Waiting subscribes to each id's done channel first and reads the stored results second,
so a result written before the subscription is found too. A notification is only a hint
to read the key again; a periodic re-read covers notifications that were lost, and a lost
connection is rebuilt until the caller's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from inferpool.errors import (
    ConfigurationError,
    InferpoolError,
    LifecycleError,
    ResultStoreUnavailable,
    ResultTimeout,
)
from inferpool.logs import get_logger
from inferpool.protocol import ResultKeys, ResultRecord, decode_result
from inferpool.settings import RedisSettings
from results.writer import STORE_ERRORS, RedisService, credentials_refused, store_errors

SUBSCRIBE_CHUNK = 500
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0
TIMEOUT_EXAMPLES = 5


class RequestState(enum.StrEnum):
    """Where a request stands: its result's status, or pending (a worker has it) / unknown."""

    OK = "ok"
    ERROR = "error"
    EXPIRED = "expired"
    PENDING = "pending"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Lookup:
    """What Redis knows about one request; ``record`` is set once there is a result."""

    state: RequestState
    record: ResultRecord | None


#: Ids re-read per poll interval by the safety-net sweep of a wait on many ids.
SWEEP_IDS_PER_INTERVAL = 1000


class _Waiter:
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
        self._backoff_s = BACKOFF_FIRST_S
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
                backoff_s=self._backoff_s,
            )
            await self.close()
            await asyncio.sleep(min(self._backoff_s, deadline - loop.time()))
            self._backoff_s = min(self._backoff_s * 2, BACKOFF_MAX_S)
            return []
        self._backoff_s, self.unavailable = BACKOFF_FIRST_S, None
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


def _many_timeout(waiter: _Waiter, total: int, timeout_s: float) -> InferpoolError:
    """ResultTimeout; or ResultStoreUnavailable when Redis was unreachable at the end."""
    missing = waiter.remaining
    examples = ", ".join(sorted(missing)[:TIMEOUT_EXAMPLES])
    more = ", ..." if len(missing) > TIMEOUT_EXAMPLES else ""
    if waiter.unavailable is not None:
        return ResultStoreUnavailable(
            f"result store (Redis) still unreachable after waiting {timeout_s:g}s for "
            f"{len(missing)} of {total} results (e.g. {examples}{more}); check that Redis is "
            "up and INFERPOOL_REDIS_URL points at it, then wait again"
        )
    return ResultTimeout(
        f"{len(missing)} of {total} results did not arrive within {timeout_s:g}s "
        f"(e.g. {examples}{more}); they may still be pending, or unknown (never submitted "
        "or expired): look them up later with 'inferpool result ID'"
    )


class ResultReader(RedisService):
    """Reads results; ``poll_interval_s`` is how often a wait re-reads every missing id."""

    def __init__(
        self, redis: RedisSettings, keys: ResultKeys, poll_interval_s: float = 1.0
    ) -> None:
        if not poll_interval_s > 0:
            raise ConfigurationError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        super().__init__(redis, keys)
        self._poll_interval_s = poll_interval_s
        self._log = get_logger("results.reader")

    async def get(self, request_id: str) -> Lookup:
        """The request's result if it has one, else whether it is pending or unknown."""
        pipe = self._client().pipeline(transaction=False)
        pipe.get(self._keys.result(request_id))
        pipe.exists(self._keys.accepted(request_id))
        with store_errors("result lookup"):
            raw, accepted = await pipe.execute()
        if raw is not None:
            record = decode_result(request_id, raw)
            return Lookup(RequestState(record.status.value), record)
        return Lookup(RequestState.PENDING if accepted else RequestState.UNKNOWN, None)

    async def wait(self, request_id: str, timeout_s: float) -> ResultRecord:
        """The request's result, waiting up to ``timeout_s``; else ResultTimeout (or
        ResultStoreUnavailable if Redis was unreachable at the end)."""
        try:
            async with contextlib.aclosing(self.wait_many([request_id], timeout_s)) as records:
                async for record in records:
                    return record
        except ResultTimeout:
            pass
        raise ResultTimeout(
            f"no result for request {request_id!r} within {timeout_s:g}s; it may still be "
            "pending, or unknown (never submitted, or its result expired): look it up later "
            f"with 'inferpool result {request_id}'"
        )

    async def wait_many(
        self, request_ids: Iterable[str], timeout_s: float
    ) -> AsyncGenerator[ResultRecord, None]:
        """Yield each result as it arrives (any order, each id once), then raise ResultTimeout
        if some did not arrive within ``timeout_s`` (ResultStoreUnavailable if Redis was
        unreachable at the end). To stop early, wrap the call in ``contextlib.aclosing`` so
        that the subscription is closed at once."""
        ids = list(dict.fromkeys(request_ids))
        waiter = _Waiter(self._client(), self._keys, ids, self._poll_interval_s, self._log)
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while waiter.remaining and (found := await waiter.next_results(deadline)) is not None:
                for record in found:
                    yield record
        finally:
            await waiter.close()
        if waiter.remaining:
            raise _many_timeout(waiter, len(ids), timeout_s) from waiter.unavailable


class SyncResultReader:
    """A blocking ResultReader for code without an event loop, used as ``with``.

    Runs its own event loop in the calling thread (``asyncio.Runner``): use it from the
    thread that opened it, and not from inside a running event loop.
    """

    def __init__(
        self, redis: RedisSettings, keys: ResultKeys, poll_interval_s: float = 1.0
    ) -> None:
        self._reader = ResultReader(redis, keys, poll_interval_s)
        self._runner: asyncio.Runner | None = None

    def __enter__(self) -> Self:
        runner = asyncio.Runner()
        try:
            runner.run(self._reader.start())
        except BaseException:
            runner.close()
            raise
        self._runner = runner
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                runner.run(self._reader.stop())
            finally:
                runner.close()

    def _run_loop(self) -> asyncio.Runner:
        if self._runner is None:
            raise LifecycleError("SyncResultReader is not open; use it inside 'with'")
        return self._runner

    def get(self, request_id: str) -> Lookup:
        return self._run_loop().run(self._reader.get(request_id))

    def wait(self, request_id: str, timeout_s: float) -> ResultRecord:
        return self._run_loop().run(self._reader.wait(request_id, timeout_s))
