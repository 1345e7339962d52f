"""RedisResultStore: the ResultStore on one Redis primary (standalone or Sentinel-managed).

Each result is written once (``SET NX``, with a TTL) under ``ResultKeys.result(id)``; a
second write for the same id never replaces the first. After the write the id's done
channel gets a ``PUBLISH``: a hint for waiting readers, the key stays the truth. Every
worker-side method is one Redis command for its whole batch (a script of
``results.scripts``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, Iterable, Sequence

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from inferpool.errors import ConfigurationError
from inferpool.logs import get_logger
from inferpool.protocol import (
    ErrorInfo,
    ResultKeys,
    ResultRecord,
    ResultStatus,
    decode_result,
    encode_or_explain,
)
from inferpool.protocol.wire import Encoding
from inferpool.settings import RedisSettings
from results import scripts
from results.redis_client import open_redis, store_errors
from results.store import Lookup, ResultStore, lookup_of
from results.waiting import RedisWaiter, many_timeout

DEFAULT_TTL_S = 3600
PROBE_TTL_S = 5
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

    async def check_access(self) -> None:
        """Send each command the worker needs once, on probe keys that expire in seconds,
        then each script: a missing permission is named (Redis names the command)."""
        client, keys = self._client(), self._keys
        probe = f"inferpool-access-check-{secrets.token_hex(6)}"
        record = ResultRecord(id=probe, status=ResultStatus.ERROR,
                              error=ErrorInfo("access_check", "a worker's start-up check"))
        with store_errors("the worker's start-up access check"):
            await client.set(keys.result(probe), record.encode(), nx=True, ex=PROBE_TTL_S)
            await client.publish(keys.done_channel(probe), "1")
            await client.incrby(keys.attempts(probe), 2)
            await client.expire(keys.attempts(probe), PROBE_TTL_S)
            await client.execute_command(  # type: ignore[no-untyped-call]
                "DECR", keys.attempts(probe)  # as the script does (redis-py's decr is DECRBY)
            )
            await client.delete(keys.attempts(probe))
            await self._scripts["count"](keys=[keys.attempts(probe)], args=[2, PROBE_TTL_S])
            await self._scripts["accept"](
                keys=[keys.accepted(probe), keys.attempts(probe)], args=[PROBE_TTL_S, 1]
            )
            await self._scripts["store"](
                keys=[keys.result(probe), keys.attempts(probe)],
                args=[PROBE_TTL_S, 1, record.encode(), keys.done_channel(probe)],
            )

    async def write(
        self, results: Sequence[tuple[ResultRecord, Encoding]], settled: Sequence[str] = ()
    ) -> int:
        """Each result ``SET NX EX`` and its done channel told, the attempt counters of the
        ``settled`` records deleted, in one script. No retry loop: on
        ResultStoreUnavailable the caller retries (a result already stored stays)."""
        self._require_started()
        if not results and not settled:
            return 0
        keys = [self._keys.result(record.id) for record, _ in results]
        keys += [self._keys.attempts(record_id) for record_id in settled]
        args: list[bytes | str | int] = [self._ttl_s, len(results)]
        args += [encode_or_explain(record, encoding) for record, encoding in results]
        args += [self._keys.done_channel(record.id) for record, _ in results]
        with store_errors("result write"):
            written = int(await self._scripts["store"](keys=keys, args=args))
        self._log.debug("results.written", results=len(results), new=written)
        return written

    async def mark_accepted(
        self, request_ids: Sequence[str], released: Sequence[str] = ()
    ) -> None:
        self._require_started()
        if not request_ids and not released:
            return
        keys = [self._keys.accepted(request_id) for request_id in request_ids]
        keys += [self._keys.attempts(record_id) for record_id in released]
        with store_errors("accepted marker write"):
            await self._scripts["accept"](keys=keys, args=[self._ttl_s, len(request_ids)])
        self._log.debug("results.accepted", requests=len(request_ids))

    async def count_attempts(self, request_ids: Sequence[str], delta: int = 1) -> list[int]:
        self._require_started()
        if not request_ids:
            return []
        keys = [self._keys.attempts(request_id) for request_id in request_ids]
        with store_errors("attempt count"):
            counts = await self._scripts["count"](keys=keys, args=[delta, self._ttl_s])
        return [int(count) for count in counts]

    # --- the client's side -----------------------------------------------------------------

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
