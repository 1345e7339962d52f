"""The Redis clients every Redis-backed store uses, and how their failures are reported.

``open_redis`` connects to one primary (standalone, or found through Sentinel),
``open_cluster`` to a Redis Cluster, both from ``INFERPOOL_REDIS_URL``'s forms
(``inferpool.settings.RedisSettings``). A lost, refused or timed-out connection, and a
cluster that is failing over, become ``ResultStoreUnavailable`` (retriable), a refused login
``ConfigurationError``; neither message holds the URL or the password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import hiredis
import redis.exceptions
from redis.asyncio import Redis, connection
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from inferpool.errors import ConfigurationError, ResultStoreUnavailable
from inferpool.settings import RedisEndpoints, RedisSettings

#: What a lost, refused or timed-out Redis connection raises.
STORE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # a full Redis under noeviction (raise maxmemory or lower INFERPOOL_RESULT_TTL_S), and a
    # replica answering writes after a failover: both pass, so they are retried too
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    # Redis Cluster during a failover or a resharding: the slot's owner is changing
    redis.exceptions.ClusterDownError,
    redis.exceptions.ClusterError,  # redirections exhausted ("TTL exhausted")
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.TryAgainError,
    OSError,
)


class _PackedByHiredis:
    """Commands packed by hiredis (C) rather than redis-py's asyncio client, which packs
    every argument in Python: a worker's batch script has several arguments per request,
    and packing them was its largest single cost (ops/bench/echo.py's profile). The bytes
    are the same; redis-py's sync client does this already."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        try:
            return [hiredis.pack_command(args)]
        except TypeError as error:
            raise redis.exceptions.DataError(str(error)) from None


class HiredisConnection(_PackedByHiredis, connection.Connection):
    pass


class HiredisSSLConnection(_PackedByHiredis, connection.SSLConnection):
    pass


class HiredisUnixConnection(_PackedByHiredis, connection.UnixDomainSocketConnection):
    pass


_CONNECTION_CLASSES: dict[str, type[connection.AbstractConnection]] = {
    "redis": HiredisConnection,
    "rediss": HiredisSSLConnection,
    "unix": HiredisUnixConnection,
}


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))


def open_redis(settings: RedisSettings) -> Redis:
    """A client for one primary that does not retry on its own: our callers decide that.
    With a sentinel URL, every new connection asks the sentinels where the primary is, and
    a connection to a primary that was demoted (``READONLY``) is dropped and asked again.

    Its one retry: a command sent on a pooled connection that Redis had closed is sent
    again at once, on a new connection. redis-py >= 8 (RESP3) no longer checks a pooled
    connection before use, so without this every idle connection fails one command after
    a Redis restart. A timeout is never retried. Close it with ``close_redis``.
    """
    endpoints = settings.endpoints()
    if endpoints.kind == "cluster":
        raise ConfigurationError("a redis+cluster:// URL needs open_cluster, not open_redis")
    if endpoints.kind == "sentinel":
        return _sentinel_primary(settings, endpoints)
    options: dict[str, Any] = {"retry": _no_retry(), **settings.client_options()}
    scheme = settings.url.split("://", 1)[0]
    if scheme in _CONNECTION_CLASSES:
        options["connection_class"] = _CONNECTION_CLASSES[scheme]
    return Redis.from_url(settings.url, **options)


def node_options(settings: RedisSettings, endpoints: RedisEndpoints) -> dict[str, Any]:
    """Connection options of a sentinel or cluster URL's data nodes (the URL's login wins)."""
    options: dict[str, Any] = {"retry": _no_retry(), **settings.client_options()}
    if endpoints.username is not None:
        options["username"] = endpoints.username
    if endpoints.password is not None:
        options["password"] = endpoints.password
    if endpoints.tls:
        options["ssl"] = True
    return options


def _sentinel_primary(settings: RedisSettings, endpoints: RedisEndpoints) -> Redis:
    assert endpoints.service is not None
    asking: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.socket_timeout_s,
    }
    if settings.sentinel_password is not None:
        asking["password"] = settings.sentinel_password.get_secret_value()
    if endpoints.tls:
        asking["ssl"] = True
        if settings.ssl_ca_certs is not None:
            asking["ssl_ca_certs"] = str(settings.ssl_ca_certs)
    sentinel = Sentinel(list(endpoints.nodes), sentinel_kwargs=asking)  # type: ignore[no-untyped-call]
    options = node_options(settings, endpoints)
    primary: Redis = sentinel.master_for(endpoints.service, db=endpoints.db, **options)
    return primary


def slot_owner(client: RedisCluster, key: str) -> ClusterNode:
    """The primary that owns ``key``'s slot, by the client's slot map."""
    node = client.get_node_from_key(key)
    if node is None:
        raise redis.exceptions.SlotNotCoveredError(f"no node owns the slot of {key!r}")
    return node


async def close_redis(client: Redis) -> None:
    """Close a client of ``open_redis``, and the sentinels' connections behind it."""
    pool = client.connection_pool
    await client.aclose()
    if isinstance(pool, SentinelConnectionPool):
        with suppress(*STORE_ERRORS):
            await pool.sentinel_manager.aclose()


def open_cluster(settings: RedisSettings) -> RedisCluster:
    """A Redis Cluster client from a ``redis+cluster://`` URL. It follows MOVED and ASK by
    itself; after a lost connection or a cluster-down answer it re-reads the slot map
    (``CLUSTER SLOTS``) and tries once more, then raises: our callers back off and retry."""
    endpoints = settings.endpoints()
    if endpoints.kind != "cluster":
        raise ConfigurationError("open_cluster needs a redis+cluster:// URL")
    options = node_options(settings, endpoints)
    retry = options.pop("retry")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in endpoints.nodes],
        retry=retry,
        **options,
    )


def credentials_refused(action: str) -> ConfigurationError:
    """Redis said no to our user/password: retrying will not help, the settings must change."""
    return ConfigurationError(
        f"Redis refused our credentials during {action}; check the user and password in "
        "INFERPOOL_REDIS_URL (or INFERPOOL_REDIS_USERNAME / INFERPOOL_REDIS_PASSWORD)"
    )


def refused_login(error: BaseException) -> bool:
    """Redis refused our user or password (a cluster client wraps it at start)."""
    cause = error.__cause__ if isinstance(error, RedisClusterException) else error
    return isinstance(cause, redis.exceptions.AuthenticationError)


def unavailable(error: BaseException) -> bool:
    """A lost connection or a failing-over deployment: retrying later may succeed."""
    if isinstance(error, RedisClusterException):  # at start: no node answered, or slots
        return isinstance(error.__cause__, STORE_ERRORS) or "not covered" in str(error)
    return isinstance(error, STORE_ERRORS)


#: Refusals that pass (Redis recovers, or an operator fixes it): the caller waits and retries,
#: with what to do for each. Redis says them first in its error message.
PASSING_REFUSALS: dict[str, str] = {
    "MISCONF": "Redis cannot persist to disk (stop-writes-on-bgsave-error): fix its disk or "
    "its dir / save settings",
    "OOM": "Redis is at maxmemory under noeviction: raise maxmemory or lower "
    "INFERPOOL_RESULT_TTL_S",
    "BUSY": "Redis is busy running a script or function",
    "READONLY": "this Redis is a replica (a failover happened): point INFERPOOL_REDIS_URL at "
    "the primary",
    "LOADING": "Redis is loading its dataset",
    "MASTERDOWN": "the replica lost its primary",
    "TRYAGAIN": "the cluster is moving keys",
    "CLUSTERDOWN": "the cluster is down",
}


def passing_refusal(error: Exception) -> str | None:
    """What to do about a refusal that passes, if ``error`` is one (else None)."""
    if not isinstance(error, redis.exceptions.ResponseError):
        return None
    text = str(error).lstrip("-")
    for prefix, advice in PASSING_REFUSALS.items():
        if text.startswith(prefix) or f" {prefix} " in text[:80]:
            return advice
    return None


def permission_refused(action: str, error: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"Redis refused a command during {action} ({error}); grant the worker's Redis user "
        "the commands and keys of docs/operations.md ('Redis ACLs'), or fix "
        "INFERPOOL_REDIS_URL's user"
    )


def command_refused(error: BaseException) -> bool:
    """Redis refused a command to our user (an ACL), outside or inside a script."""
    return isinstance(error, redis.exceptions.NoPermissionError) or (
        isinstance(error, redis.exceptions.ResponseError) and "can't run this command" in str(error)
    )


def _reported(action: str, error: Exception) -> Exception | None:
    """The project error ``error`` is reported as during ``action``; None: not ours to map."""
    if refused_login(error):
        return credentials_refused(action)
    if command_refused(error):
        return permission_refused(action, error)
    if unavailable(error):
        return ResultStoreUnavailable(
            f"result store (Redis) unavailable during {action}: {type(error).__name__}; "
            "check that Redis is up and INFERPOOL_REDIS_URL points at it, then retry"
        )
    advice = passing_refusal(error)
    if advice is None:
        return None
    return ResultStoreUnavailable(
        f"result store (Redis) refused {action} for now: {str(error)[:200]} — {advice}"
    )


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Raise a lost connection, a failing-over cluster, or a refusal that passes (MISCONF,
    OOM, BUSY, READONLY, LOADING, ...), as ResultStoreUnavailable (retriable); a refused login
    or command as ConfigurationError (not retriable). Messages hold neither the URL nor the
    password."""
    try:
        yield
    except Exception as error:
        reported = _reported(action, error)
        if reported is None:
            raise
        if isinstance(reported, ConfigurationError):
            raise reported from None
        raise reported from error
