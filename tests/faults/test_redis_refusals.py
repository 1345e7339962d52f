"""Redis that answers but refuses: out of memory under noeviction, MISCONF after a failed
save, READONLY after it turned replica. The worker pauses and retries with back-off (no
crash, nothing committed for the held requests) and goes on where it was once Redis
accepts writes again."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio
from pool_helpers import collect, committed_total, running_worker, wait_until_committed
from services import running

from inferpool.embedded import EmbeddedRedis, free_port
from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest
from worker.models.echo import EchoModel
from worker.pool import Worker

pytestmark = pytest.mark.slow

REQUESTS = 20


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    yield from running(EmbeddedRedis())


def retries(worker: Worker) -> float:
    value = worker.metrics.registry.get_sample_value("inferpool_result_store_retries_total")
    return value or 0.0


async def eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def refused_then_fixed(
    settings: InferpoolSettings,
    refuse: Callable[[redis.asyncio.Redis], Awaitable[None]],
    fix: Callable[[redis.asyncio.Redis], Awaitable[None]],
) -> AsyncIterator[None]:
    """A worker whose Redis refuses while REQUESTS are sent: every request must wait, none
    be committed, the worker stay alive; then Redis is fixed and all must be answered."""
    async with running_worker(settings, EchoModel()) as worker, redis.asyncio.Redis.from_url(
        settings.redis.url
    ) as admin:
        await refuse(admin)
        async with Producer(settings) as producer:
            ids = await producer.submit_many(SubmitRequest("echo", i) for i in range(REQUESTS))
        async def retried() -> bool:
            return retries(worker) >= 3

        await eventually(retried)
        assert await committed_total(settings) == 0, "committed before the results were stored"
        assert worker.failed is None
        await fix(admin)
        found = await collect(settings, ids, timeout_s=60)
        await wait_until_committed(settings, REQUESTS)
        assert worker.failed is None
    assert sorted(record.outputs for record in found.values()) == list(range(REQUESTS))
    yield


def on(settings: InferpoolSettings, server: EmbeddedRedis) -> InferpoolSettings:
    return settings.model_copy(update={
        "redis": settings.redis.model_copy(update={"url": server.url})})


async def test_out_of_memory_under_noeviction_pauses_and_recovers(
    settings: InferpoolSettings, own_redis: EmbeddedRedis
) -> None:
    async def refuse(admin: redis.asyncio.Redis) -> None:
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1")

    async def fix(admin: redis.asyncio.Redis) -> None:
        await admin.config_set("maxmemory", "0")

    async with refused_then_fixed(on(settings, own_redis), refuse, fix):
        pass


async def test_misconf_after_a_failed_save_pauses_and_recovers(
    settings: InferpoolSettings, own_redis: EmbeddedRedis
) -> None:
    async def refuse(admin: redis.asyncio.Redis) -> None:
        await admin.config_set("stop-writes-on-bgsave-error", "yes")
        await admin.config_set("save", "3600 1")  # writes stop only where saves are due
        shutil.rmtree(own_redis.workdir)  # its working dir: the save cannot create its file
        await admin.bgsave()

        async def save_failed() -> bool:
            info = await admin.info("persistence")
            return info["rdb_bgsave_in_progress"] == 0 and info["rdb_last_bgsave_status"] == "err"

        await eventually(save_failed)

    async def fix(admin: redis.asyncio.Redis) -> None:
        await admin.config_set("stop-writes-on-bgsave-error", "no")  # what an operator does

    async with refused_then_fixed(on(settings, own_redis), refuse, fix):
        pass


async def test_readonly_after_turning_replica_pauses_and_recovers(
    settings: InferpoolSettings, own_redis: EmbeddedRedis
) -> None:
    async def refuse(admin: redis.asyncio.Redis) -> None:
        await admin.replicaof("127.0.0.1", str(free_port()))  # a primary that is not there

    async def fix(admin: redis.asyncio.Redis) -> None:
        await admin.replicaof("NO", "ONE")

    async with refused_then_fixed(on(settings, own_redis), refuse, fix):
        pass
