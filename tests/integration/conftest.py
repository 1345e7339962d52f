"""Fixtures shared by the integration tests of this folder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from inferpool.protocol import ResultKeys
from inferpool.settings import InferpoolSettings
from results import InMemoryResultStore, RedisResultStore, ResultStore


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ResultStore]:
    """The store contracts' subject: the in-memory store, and Redis on the test's own
    server (a module may override it: the cluster tests run the contract on a cluster)."""
    backend: ResultStore
    if request.param == "memory":
        backend = InMemoryResultStore()
    else:
        settings: InferpoolSettings = request.getfixturevalue("settings")
        backend = RedisResultStore(
            settings.redis, ResultKeys(settings.result_key_prefix), ttl_s=60, poll_interval_s=30
        )
    async with backend:
        yield backend
