"""ResultWriter: stores a batch of results in one Redis command and tells the waiters.

Each result is written once (``SET NX``, with a TTL) under ``ResultKeys.result(id)``; a
second write for the same id never replaces the first. After the write the id's done
channel gets a ``PUBLISH``: a hint for waiting readers, the key stays the truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from inferpool.errors import ConfigurationError, InvalidOutput, ResultStoreUnavailable
from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from inferpool.protocol import ErrorInfo, ResultKeys, ResultRecord, ResultStatus
from inferpool.protocol.wire import Encoding
from inferpool.settings import RedisSettings
from results import scripts

#: What a lost, refused or timed-out Redis connection raises.
STORE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # a full Redis under noeviction (raise maxmemory or lower INFERPOOL_RESULT_TTL_S), and a
    # replica answering writes after a failover: both pass, so they are retried too
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    OSError,
)


def open_redis(settings: RedisSettings) -> Redis:
    """A client for ``settings`` that does not retry on its own: our callers decide that.

    Its one exception: a command sent on a pooled connection that Redis had closed is sent
    again at once, on a new connection. redis-py >= 8 (RESP3) no longer checks a pooled
    connection before use, so without this every idle connection fails one command after
    a Redis restart. A timeout is never retried.
    """
    retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
    options: dict[str, Any] = {"retry": retry, **settings.client_options()}
    return Redis.from_url(settings.url, **options)


def credentials_refused(action: str) -> ConfigurationError:
    """Redis said no to our user/password: retrying will not help, the settings must change."""
    return ConfigurationError(
        f"Redis refused our credentials during {action}; check the user and password in "
        "INFERPOOL_REDIS_URL (or INFERPOOL_REDIS_USERNAME / INFERPOOL_REDIS_PASSWORD)"
    )


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Raise a lost connection as ResultStoreUnavailable, without the URL or password."""
    try:
        yield
    except redis.exceptions.AuthenticationError:
        raise credentials_refused(action) from None
    except STORE_ERRORS as error:
        raise ResultStoreUnavailable(
            f"result store (Redis) unavailable during {action}: {type(error).__name__}; "
            "check that Redis is up and INFERPOOL_REDIS_URL points at it, then retry"
        ) from error


def encode_or_explain(record: ResultRecord, encoding: Encoding) -> bytes:
    """The record's bytes; an output that cannot be encoded becomes an error result instead,
    so one bad output never blocks the batch it came in."""
    try:
        return record.encode(encoding)
    except (TypeError, ValueError, OverflowError) as error:
        problem = InvalidOutput(
            f"the model's output cannot be encoded as {encoding.name.lower()}: {error}"
        )
        return dataclasses.replace(
            record,
            status=ResultStatus.ERROR,
            outputs=None,
            error=ErrorInfo(problem.code, str(problem)),
        ).encode(encoding)


class RedisService(Service):
    """A Service that owns one Redis client for its whole life."""

    def __init__(self, redis: RedisSettings, keys: ResultKeys) -> None:
        self._settings = redis
        self._keys = keys
        self._redis: Redis | None = None

    async def _start(self) -> None:
        self._redis = open_redis(self._settings)

    async def _stop(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    def _client(self) -> Redis:
        self._require_started()
        assert self._redis is not None
        return self._redis


class ResultWriter(RedisService):
    """Writes results and 'accepted' markers, each with the given TTL.

    Every method is one Redis command for its whole batch (a script of ``results.scripts``).
    """

    def __init__(self, redis: RedisSettings, keys: ResultKeys, ttl_s: int) -> None:
        if ttl_s <= 0:
            raise ConfigurationError(f"result ttl must be > 0 seconds, got {ttl_s}")
        super().__init__(redis, keys)
        self._ttl_s = ttl_s
        self._log = get_logger("results.writer")
        self._scripts: dict[str, AsyncScript] = {}

    async def _start(self) -> None:
        await super()._start()
        client = self._redis
        assert client is not None
        self._scripts = {
            name: client.register_script(source)
            for name, source in (
                ("store", scripts.STORE_RESULTS),
                ("accept", scripts.MARK_ACCEPTED),
                ("count", scripts.COUNT_ATTEMPTS),
            )
        }

    async def write(self, results: Sequence[tuple[ResultRecord, Encoding]]) -> int:
        """Store each result unless its id has one already; return how many were new.

        Each result is ``SET NX EX``, its done channel told, its attempt count dropped
        (answered: no longer a suspect). No retry loop: on ResultStoreUnavailable the caller
        retries (that is safe: a result already stored stays as it is).
        """
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
        """Record that a worker has taken these requests: readers then see them as pending."""
        self._require_started()
        if not request_ids:
            return
        keys = [self._keys.accepted(request_id) for request_id in request_ids]
        with store_errors("accepted marker write"):
            await self._scripts["accept"](keys=keys, args=[self._ttl_s])
        self._log.debug("results.accepted", requests=len(request_ids))

    async def count_attempts(self, request_ids: Sequence[str], delta: int = 1) -> list[int]:
        """Add ``delta`` attempts at running each request; return each request's count."""
        self._require_started()
        if not request_ids:
            return []
        keys = [self._keys.attempts(request_id) for request_id in request_ids]
        with store_errors("attempt count"):
            counts = await self._scripts["count"](keys=keys, args=[delta, self._ttl_s])
        return [int(count) for count in counts]
