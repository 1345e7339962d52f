"""The Redis client every Redis-backed store uses, and how its failures are reported.

A lost, refused or timed-out connection becomes ``ResultStoreUnavailable`` (retriable), a
refused login ``ConfigurationError``; neither message holds the URL or the password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hiredis
import redis.exceptions
from redis.asyncio import Redis, connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from inferpool.errors import ConfigurationError, ResultStoreUnavailable
from inferpool.settings import RedisSettings

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


def open_redis(settings: RedisSettings) -> Redis:
    """A client for ``settings`` that does not retry on its own: our callers decide that.

    Its one exception: a command sent on a pooled connection that Redis had closed is sent
    again at once, on a new connection. redis-py >= 8 (RESP3) no longer checks a pooled
    connection before use, so without this every idle connection fails one command after
    a Redis restart. A timeout is never retried.
    """
    retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
    options: dict[str, Any] = {"retry": retry, **settings.client_options()}
    scheme = settings.url.split("://", 1)[0]
    if scheme in _CONNECTION_CLASSES:
        options["connection_class"] = _CONNECTION_CLASSES[scheme]
    return Redis.from_url(settings.url, **options)


def credentials_refused(action: str) -> ConfigurationError:
    """Redis said no to our user/password: retrying will not help, the settings must change."""
    return ConfigurationError(
        f"Redis refused our credentials during {action}; check the user and password in "
        "INFERPOOL_REDIS_URL (or INFERPOOL_REDIS_USERNAME / INFERPOOL_REDIS_PASSWORD)"
    )


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


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Raise a lost connection, or a refusal that passes (MISCONF, OOM, BUSY, READONLY,
    LOADING, ...), as ResultStoreUnavailable (retriable); a refused login or command as
    ConfigurationError (not retriable). Messages hold neither the URL nor the password."""
    try:
        yield
    except redis.exceptions.AuthenticationError:
        raise credentials_refused(action) from None
    except redis.exceptions.NoPermissionError as error:
        raise permission_refused(action, error) from None
    except STORE_ERRORS as error:
        raise ResultStoreUnavailable(
            f"result store (Redis) unavailable during {action}: {type(error).__name__}; "
            "check that Redis is up and INFERPOOL_REDIS_URL points at it, then retry"
        ) from error
    except redis.exceptions.ResponseError as error:
        if "can't run this command" in str(error):  # a refusal inside a script
            raise permission_refused(action, error) from None
        advice = passing_refusal(error)
        if advice is None:
            raise
        raise ResultStoreUnavailable(
            f"result store (Redis) refused {action} for now: {str(error)[:200]} — {advice}"
        ) from error
