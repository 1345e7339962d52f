"""RedisResultStore: the ResultStore on one Redis primary (standalone or Sentinel-managed).

Each result is written once (``SET NX``, with a TTL) under ``ResultKeys.result(id)``; a
second write for the same id never replaces the first. After the write the id's done
channel gets a ``PUBLISH``: a hint for waiting readers, the key stays the truth. Every
worker-side method is one Redis command for its whole batch (a script of
``results.scripts``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Sequence

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from inferpool.errors import ConfigurationError
from inferpool.logs import get_logger
from inferpool.protocol import ResultKeys, ResultRecord, decode_result, encode_or_explain
from inferpool.protocol.generation import StreamEntry
from inferpool.protocol.wire import Encoding
from inferpool.settings import RedisSettings
from results import scripts
from results.redis_client import open_redis, store_errors
from results.store import Lookup, ResultStore, StreamAppend, StreamItem, lookup_of
from results.waiting import RedisWaiter, many_timeout

DEFAULT_TTL_S = 3600
DEFAULT_POLL_INTERVAL_S = 1.0


class RedisResultStore(ResultStore):
    """``ttl_s`` is every key's time to live; ``poll_interval_s`` how often a wait re-reads
    every missing id (a safety net under the pub/sub notifications)."""

    def __init__(
        self,
        redis: RedisSettings,
        keys: ResultKeys,
        ttl_s: int = DEFAULT_TTL_S,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        if ttl_s <= 0:
            raise ConfigurationError(f"result ttl must be > 0 seconds, got {ttl_s}")
        if not poll_interval_s > 0:
            raise ConfigurationError(f"poll_interval_s must be > 0, got {poll_interval_s}")
        self._settings = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._poll_interval_s = poll_interval_s
        self._redis: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._log = get_logger("results.store")

    async def _start(self) -> None:
        client = self._redis = open_redis(self._settings)
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("store", scripts.STORE_RESULTS),
                ("accept", scripts.MARK_ACCEPTED),
                ("count", scripts.COUNT_ATTEMPTS),
                ("append", scripts.APPEND_STREAMS),
            )
        }

    async def _stop(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    def _client(self) -> Redis:
        self._require_started()
        assert self._redis is not None
        return self._redis

    # --- the worker's side -----------------------------------------------------------------

    async def write(self, results: Sequence[tuple[ResultRecord, Encoding]]) -> int:
        """Each result ``SET NX EX``, its done channel told, its attempt count dropped
        (answered: no longer a suspect), in one script. No retry loop: on
        ResultStoreUnavailable the caller retries (a result already stored stays)."""
        self._require_started()
        if not results:
            return 0
        keys: list[str] = []
        args: list[bytes | str | int] = [self._ttl_s]
        for record, encoding in results:
            keys += [self._keys.result(record.id), self._keys.attempts(record.id)]
            args += [encode_or_explain(record, encoding), self._keys.done_channel(record.id)]
        with store_errors("result write"):
            written = int(await self._scripts["store"](keys=keys, args=args))
        self._log.debug("results.written", results=len(results), new=written)
        return written

    async def mark_accepted(self, request_ids: Sequence[str]) -> None:
        self._require_started()
        if not request_ids:
            return
        keys = [self._keys.accepted(request_id) for request_id in request_ids]
        with store_errors("accepted marker write"):
            await self._scripts["accept"](keys=keys, args=[self._ttl_s])
        self._log.debug("results.accepted", requests=len(request_ids))

    async def count_attempts(self, request_ids: Sequence[str], delta: int = 1) -> list[int]:
        self._require_started()
        if not request_ids:
            return []
        keys = [self._keys.attempts(request_id) for request_id in request_ids]
        with store_errors("attempt count"):
            counts = await self._scripts["count"](keys=keys, args=[delta, self._ttl_s])
        return [int(count) for count in counts]

    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[bool]:
        """Every append in one script (``scripts.APPEND_STREAMS``)."""
        self._require_started()
        if not appends:
            return []
        keys: list[str] = []
        args: list[bytes | str | int] = [self._ttl_s]
        for append in appends:
            keys += [self._keys.stream(append.request_id), self._keys.result(append.request_id)]
            args += ["1" if append.opening else "0", append.worker, len(append.entries)]
            for entry in append.entries:
                fields = entry.to_fields()
                args.append(2 * len(fields))
                for name, value in fields.items():
                    args += [name, value]
        with store_errors("stream append"):
            answered = await self._scripts["append"](keys=keys, args=args)
        return [bool(int(flag)) for flag in answered]

    async def cancel_requested(self, request_ids: Sequence[str]) -> list[bool]:
        self._require_started()
        if not request_ids:
            return []
        pipe = self._client().pipeline(transaction=False)
        for request_id in request_ids:
            pipe.exists(self._keys.cancel(request_id))
        with store_errors("cancel check"):
            found = await pipe.execute()
        return [bool(flag) for flag in found]

    # --- the client's side -----------------------------------------------------------------

    async def request_cancel(self, request_id: str) -> None:
        with store_errors("cancel request"):
            await self._client().set(self._keys.cancel(request_id), "1", ex=self._ttl_s)

    async def read_stream(
        self, request_id: str, after: str, timeout_s: float
    ) -> list[StreamItem]:
        block = int(timeout_s * 1000) if timeout_s > 0 else None
        with store_errors("stream read"):
            reply = await self._client().xread(
                {self._keys.stream(request_id): after}, block=block or None
            )
        items: list[StreamItem] = []
        for _stream, entries in _stream_replies(reply):
            for entry_id, fields in entries:
                key = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                items.append((key, StreamEntry.from_fields(fields)))  # type: ignore[arg-type]
        return items

    async def get(self, request_id: str) -> Lookup:
        pipe = self._client().pipeline(transaction=False)
        pipe.get(self._keys.result(request_id))
        pipe.exists(self._keys.accepted(request_id))
        with store_errors("result lookup"):
            raw, accepted = await pipe.execute()
        return lookup_of(decode_result(request_id, raw) if raw is not None else None, accepted)

    async def wait_many(
        self, request_ids: Iterable[str], timeout_s: float
    ) -> AsyncGenerator[ResultRecord, None]:
        """As ``ResultStore.wait_many``; at the end ResultStoreUnavailable instead of
        ResultTimeout when Redis was unreachable then."""
        ids = list(dict.fromkeys(request_ids))
        waiter = RedisWaiter(self._client(), self._keys, ids, self._poll_interval_s, self._log)
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while waiter.remaining and (found := await waiter.next_results(deadline)) is not None:
                for record in found:
                    yield record
        finally:
            await waiter.close()
        if waiter.remaining:
            raise many_timeout(waiter, len(ids), timeout_s) from waiter.unavailable


def _stream_replies(reply: object) -> list[tuple[object, list[tuple[object, object]]]]:
    """XREAD's reply as (stream, entries) pairs: a list under RESP2, a map under RESP3."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(stream, entries) for stream, entries in reply]  # type: ignore[attr-defined]
