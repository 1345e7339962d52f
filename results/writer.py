"""ResultWriter: the Redis result store as the worker uses it, built from its TTL."""

from __future__ import annotations

from inferpool.protocol import ResultKeys
from inferpool.settings import RedisSettings
from results.redis_store import RedisResultStore


class ResultWriter(RedisResultStore):
    """A RedisResultStore whose keys live ``ttl_s`` seconds."""

    def __init__(self, redis: RedisSettings, keys: ResultKeys, ttl_s: int) -> None:
        super().__init__(redis, keys, ttl_s=ttl_s)
