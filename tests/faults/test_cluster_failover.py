"""A Redis Cluster primary failed over (``CLUSTER FAILOVER`` on its replica) while two
worker processes are under load and a client waits: the workers follow the slots to the
new primary, the waiting client's sharded subscriptions are rebuilt there, and nothing is
lost: every request is answered once, by a single run, and its offset committed."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest
from fleet import Fleet, Load, named, using_redis
from ha_helpers import FirstSeenOn, check_invariant_on, cluster, cluster_client
from pool_helpers import reader_for, wait_until_committed

from inferpool.embedded_ha import EmbeddedRedisCluster
from inferpool.settings import InferpoolSettings
from producer.client import Producer
from results import ResultReader

pytestmark = pytest.mark.slow
__all__ = ["cluster"]


async def answered(reader: ResultReader, ids: list[str], timeout_s: float) -> list[str]:
    async with aclosing(reader.wait_many(ids, timeout_s)) as records:
        return [record.id async for record in records]


async def test_a_primary_failed_over_mid_load_loses_nothing(
    settings: InferpoolSettings, fleet: Fleet, cluster: EmbeddedRedisCluster
) -> None:
    settings = fleet.settings = using_redis(settings, cluster.url)
    workers = await fleet.start(["one", "two"])
    make_client = cluster_client(cluster)
    victim = cluster.primaries()[0]
    replica = cluster.replica_of(victim)
    async with (
        FirstSeenOn(settings, make_client) as seen,
        Producer(settings) as producer,
        reader_for(settings) as reader,
    ):
        load = Load(producer, seen, per_tick=10, tick_s=0.05)
        load.start()
        await load.until(lambda: len(seen.raw) >= 200, 30, "the load to flow")
        awaited = await load.burst(150)  # answered around the failover, some after it
        waiting = asyncio.create_task(answered(reader, awaited, 90))
        await asyncio.to_thread(cluster.failover, replica)
        assert cluster.role(replica) == "master" and cluster.role(victim) == "slave"
        marker = len(load.sent)
        await load.until(lambda: len(seen.raw) >= marker + 200, 60, "answers after the failover")
        await load.stop()
        first = await seen.wait_all(60)
        got = await asyncio.wait_for(waiting, 90)
    assert sorted(got) == sorted(awaited), "the waiting client missed results"
    ledger = await check_invariant_on(
        make_client, settings, load.sent, fleet.call_log, first, exactly_once=True
    )
    await wait_until_committed(settings, ledger.sent, timeout_s=30)
    for worker in workers:
        assert worker.process is not None and worker.process.poll() is None
        assert not named(worker, "worker.task_failed")
    assert ledger.sent >= 500
