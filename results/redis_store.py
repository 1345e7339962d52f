"""RedisResultStore: the ResultStore on Redis: one primary (standalone or found through
Sentinel) or a Redis Cluster, whichever ``INFERPOOL_REDIS_URL`` names (``results.connect``).

Each result is written once (``SET NX``, with a TTL) under ``ResultKeys.result(id)``; a
second write for the same id never replaces the first. After the write the id's done
channel is told (``PUBLISH``, or ``SPUBLISH`` on a Redis >= 7 cluster): a hint for waiting
readers, the key stays the truth. Every worker-side method is one script of
``results.scripts`` for its whole batch: one command on a primary, one per node touched on
a cluster (``results.cluster``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, Iterable, Sequence

from inferpool.errors import ConfigurationError, MalformedRequest
from inferpool.logs import get_logger
from inferpool.protocol import (
    ErrorInfo,
    LoadSummary,
    ResultKeys,
    ResultRecord,
    ResultStatus,
    decode_result,
    encode_or_explain,
    now_ms,
)
from inferpool.protocol.generation import StreamEntry
from inferpool.protocol.wire import Encoding
from inferpool.settings import RedisSettings
from results import scripts
from results.connect import connect
from results.redis_client import store_errors
from results.store import (
    LOAD_MAX_AGE_MS,
    Lookup,
    ResultStore,
    StreamAppend,
    StreamItem,
    lookup_of,
)
from results.topology import Item, Topology
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
        self._topology: Topology | None = None
        self._log = get_logger("results.store")

    async def _start(self) -> None:
        self._topology = connect(self._settings)

    async def _stop(self) -> None:
        topology, self._topology = self._topology, None
        if topology is not None:
            await topology.close()

    def _connected(self) -> Topology:
        self._require_started()
        assert self._topology is not None
        return self._topology

    # --- the worker's side -----------------------------------------------------------------

    async def check_access(self) -> None:
        """Send each command the worker needs once, on probe keys that expire in seconds,
        then each script, then delete the probe's keys: a missing permission is named
        (Redis names the command)."""
        topology, keys = self._connected(), self._keys
        client = topology.client
        probe = f"inferpool-access-check-{secrets.token_hex(6)}"
        record = ResultRecord(id=probe, status=ResultStatus.ERROR,
                              error=ErrorInfo("access_check", "a worker's start-up check"))
        attempts = [Item(keys.attempts(probe))]
        with store_errors("the worker's start-up access check"):
            await client.set(keys.result(probe), record.encode(), nx=True, ex=PROBE_TTL_S)
            await client.execute_command(
                await topology.publish_command(), keys.done_channel(probe), "1"
            )
            await client.incrby(keys.attempts(probe), 2)
            await client.expire(keys.attempts(probe), PROBE_TTL_S)
            await client.execute_command(
                "DECR", keys.attempts(probe)  # as the script does (redis-py's decr is DECRBY)
            )
            await client.delete(keys.attempts(probe))
            await topology.run(scripts.COUNT, [2, PROBE_TTL_S], [attempts])
            await topology.run(scripts.ACCEPT, [PROBE_TTL_S], [[Item(keys.accepted(probe))],
                                                               attempts])
            stored = Item(keys.result(probe), (record.encode(), keys.done_channel(probe)))
            await topology.run(scripts.STORE, [PROBE_TTL_S], [[stored], attempts])
            await self.publish_load(probe, LoadSummary(probe, updated_ms=now_ms()), PROBE_TTL_S)
            await client.delete(keys.load(probe))
            await client.exists(keys.cancel(probe))
            await topology.run(scripts.CANCELLED, [], [[Item(keys.cancel(probe))]])
            # one hash tag, one slot: the probe leaves nothing behind for anyone to count
            await client.delete(keys.result(probe), keys.accepted(probe), keys.attempts(probe))

    async def write(
        self, results: Sequence[tuple[ResultRecord, Encoding]], settled: Sequence[str] = ()
    ) -> int:
        """Each result ``SET NX EX`` and its done channel told, the attempt counters of the
        ``settled`` records deleted, by one script per node. No retry loop: on
        ResultStoreUnavailable the caller retries (a result already stored stays; on a
        cluster, the count of new ones then misses those a first try stored)."""
        topology = self._connected()
        if not results and not settled:
            return 0
        stored = [
            Item(self._keys.result(record.id),
                 (encode_or_explain(record, encoding), self._keys.done_channel(record.id)))
            for record, encoding in results
        ]
        dropped = [Item(self._keys.attempts(record_id)) for record_id in settled]
        with store_errors("result write"):
            groups = await topology.run(scripts.STORE, [self._ttl_s], [stored, dropped])
        written = sum(int(group.reply) for group in groups)
        self._log.debug("results.written", results=len(results), new=written)
        return written

    async def mark_accepted(
        self, request_ids: Sequence[str], released: Sequence[str] = ()
    ) -> None:
        topology = self._connected()
        if not request_ids and not released:
            return
        accepted = [Item(self._keys.accepted(request_id)) for request_id in request_ids]
        decremented = [Item(self._keys.attempts(record_id)) for record_id in released]
        with store_errors("accepted marker write"):
            await topology.run(scripts.ACCEPT, [self._ttl_s], [accepted, decremented])
        self._log.debug("results.accepted", requests=len(request_ids))

    async def count_attempts(self, record_ids: Sequence[str], delta: int = 1) -> list[int]:
        topology = self._connected()
        if not record_ids:
            return []
        items = [Item(self._keys.attempts(record_id)) for record_id in record_ids]
        with store_errors("attempt count"):
            groups = await topology.run(scripts.COUNT, [delta, self._ttl_s], [items])
        counts = [0] * len(record_ids)
        for group in groups:
            for index, count in zip(group.positions(0), group.reply, strict=True):
                counts[index] = int(count)
        return counts

    async def start_attempts(
        self, record_ids: Sequence[str], request_ids: Sequence[str]
    ) -> tuple[list[int], list[bool]]:
        """``scripts.START``: one command per node."""
        topology = self._connected()
        if not record_ids and not request_ids:
            return [], []
        attempts = [Item(self._keys.attempts(record_id)) for record_id in record_ids]
        cancels = [Item(self._keys.cancel(request_id)) for request_id in request_ids]
        with store_errors("attempt count"):
            groups = await topology.run(scripts.START, [self._ttl_s], [attempts, cancels])
        counts, flags = [0] * len(record_ids), [False] * len(request_ids)
        for group in groups:
            counted = group.positions(0)
            for index, count in zip(counted, group.reply[: len(counted)], strict=True):
                counts[index] = int(count)
            for index, flag in zip(group.positions(1), group.reply[len(counted):], strict=True):
                flags[index] = bool(int(flag))
        return counts, flags

    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[bool]:
        """Every append by one script per node (``scripts.APPEND``)."""
        topology = self._connected()
        if not appends:
            return []
        streams, results = [], []
        for append in appends:
            args: list[bytes | str | int] = [
                "1" if append.opening else "0", append.worker, len(append.entries)
            ]
            for entry in append.entries:
                fields = entry.to_fields()
                args.append(2 * len(fields))
                for name, value in fields.items():
                    args += [name, value]
            streams.append(Item(self._keys.stream(append.request_id), tuple(args)))
            results.append(Item(self._keys.result(append.request_id)))
        with store_errors("stream append"):
            groups = await topology.run(scripts.APPEND, [self._ttl_s], [streams, results])
        answered = [False] * len(appends)
        for group in groups:
            for index, flag in zip(group.positions(0), group.reply, strict=True):
                answered[index] = bool(int(flag))
        return answered

    async def cancel_requested(self, request_ids: Sequence[str]) -> list[bool]:
        self._require_started()
        if not request_ids:
            return []
        topology = self._connected()
        items = [Item(self._keys.cancel(request_id)) for request_id in request_ids]
        with store_errors("cancel check"):
            groups = await topology.run(scripts.CANCELLED, [], [items])
        flags = [False] * len(request_ids)
        for group in groups:
            for index, flag in zip(group.positions(0), group.reply, strict=True):
                flags[index] = bool(int(flag))
        return flags

    async def publish_load(self, model: str, summary: LoadSummary, ttl_s: float) -> None:
        """``HSET`` the summary under this worker's field, and refresh the hash's TTL."""
        key = self._keys.load(model)
        pipe = self._connected().client.pipeline(transaction=False)
        pipe.hset(key, summary.worker, summary.encode())
        pipe.pexpire(key, max(1, int(ttl_s * 1000)))
        with store_errors("load summary write"):
            await pipe.execute()

    # --- the client's side -----------------------------------------------------------------

    async def load(self, model: str, max_age_ms: int = LOAD_MAX_AGE_MS) -> list[LoadSummary]:
        with store_errors("load summary read"):
            raw = await self._connected().client.hgetall(self._keys.load(model))
        oldest = now_ms() - max_age_ms
        summaries = []
        for value in raw.values():
            try:
                summary = LoadSummary.decode(value)
            except MalformedRequest:
                continue
            if summary.updated_ms >= oldest:
                summaries.append(summary)
        return summaries

    async def request_cancel(self, request_id: str) -> None:
        with store_errors("cancel request"):
            await self._connected().client.set(self._keys.cancel(request_id), "1", ex=self._ttl_s)

    async def read_stream(
        self, request_id: str, after: str, timeout_s: float
    ) -> list[StreamItem]:
        block = int(timeout_s * 1000) if timeout_s > 0 else None
        with store_errors("stream read"):
            reply = await self._connected().client.xread(
                {self._keys.stream(request_id): after}, block=block or None
            )
        items: list[StreamItem] = []
        for _stream, entries in _stream_replies(reply):
            for entry_id, fields in entries:
                key = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                items.append((key, StreamEntry.from_fields(fields)))  # type: ignore[arg-type]
        return items

    async def get(self, request_id: str) -> Lookup:
        pipe = self._connected().client.pipeline(transaction=False)
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
        waiter = RedisWaiter(self._connected(), self._keys, ids, self._poll_interval_s, self._log)
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
