"""Redis behind Sentinel (a primary, one replica, one sentinel): the primary killed
(SIGKILL) under load. Workers and a waiting client find the promoted replica through the
sentinel and carry on; and what a failover loses is measured: with asynchronous
replication, exactly the results the old primary acknowledged after its replica last
heard from it, never recomputed (their offsets were committed); with
INFERPOOL_REDIS_WAIT_REPLICAS=1, nothing (writes wait instead, until a replica is back)."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import aclosing

import pytest
from fleet import Fleet, Load, named, using_redis, wait_until
from ha_helpers import FirstSeenOn, check_invariant_on, sentinel, sentinel_client, stored_results
from invariants import judge, read_call_log
from pool_helpers import reader_for, wait_until_committed

from inferpool.embedded_ha import EmbeddedSentinel, redis_cli
from inferpool.settings import InferpoolSettings
from producer.client import Producer
from results import ResultReader

pytestmark = pytest.mark.slow
__all__ = ["sentinel"]


def with_replicas_waited(settings: InferpoolSettings, url: str, replicas: int) -> InferpoolSettings:
    settings = using_redis(settings, url)
    redis = settings.redis.model_copy(update={"wait_replicas": replicas, "wait_timeout_ms": 200})
    return settings.model_copy(update={"redis": redis})


def kill_primary(sentinel: EmbeddedSentinel) -> None:
    os.kill(sentinel.primary.pid, signal.SIGKILL)
    sentinel.primary.stop()  # reaps it


async def promoted(sentinel: EmbeddedSentinel) -> None:
    async def replica_is_primary() -> bool:
        port = await asyncio.to_thread(sentinel.primary_port)
        return port == sentinel.replica.port

    await wait_until(replica_is_primary, 30, "the sentinel to promote the replica")


async def answered(reader: ResultReader, ids: list[str], timeout_s: float) -> list[str]:
    async with aclosing(reader.wait_many(ids, timeout_s)) as records:
        return [record.id async for record in records]


async def test_the_primary_killed_mid_load_workers_and_a_waiting_client_carry_on(
    settings: InferpoolSettings, fleet: Fleet, sentinel: EmbeddedSentinel
) -> None:
    # the default: asynchronous replication (with one replica, WAIT 1 would hold every write
    # after the failover until a new replica joins; the test below shows that)
    settings = fleet.settings = with_replicas_waited(settings, sentinel.url, 0)
    workers = await fleet.start(["one", "two"])
    make_client = sentinel_client(sentinel)
    async with (
        FirstSeenOn(settings, make_client) as seen,
        Producer(settings) as producer,
        reader_for(settings) as reader,
    ):
        load = Load(producer, seen, per_tick=10, tick_s=0.05)
        load.start()
        await load.until(lambda: len(seen.raw) >= 200, 30, "the load to flow")
        awaited = await load.burst(150)
        waiting = asyncio.create_task(answered(reader, awaited, 90))
        kill_primary(sentinel)
        await promoted(sentinel)
        marker = len(load.sent)
        await load.until(lambda: len(seen.raw) >= marker + 200, 60, "answers after the failover")
        await load.stop()
        first = await seen.wait_all(60)
        got = await asyncio.wait_for(waiting, 90)
    assert sorted(got) == sorted(awaited), "the waiting client missed results"
    ledger = await check_invariant_on(
        make_client, settings, load.sent, fleet.call_log, first, exactly_once=True
    )
    print(f"\nprimary killed, healthy replica: {ledger.summary()}")
    await wait_until_committed(settings, ledger.sent, timeout_s=30)
    for worker in workers:
        assert worker.process is not None and worker.process.poll() is None
        assert not named(worker, "worker.task_failed")
    assert any(named(w, "results.store_retry") for w in workers), "no write met the failover"


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_what_a_failover_loses_is_what_the_replica_had_not_received(
    settings: InferpoolSettings, fleet: Fleet, sentinel: EmbeddedSentinel, wait_replicas: int
) -> None:
    """The replica is cut off (frozen, its link closed by the primary) for half a second of
    load, then the primary is killed and the replica, thawed at once, is promoted."""
    settings = fleet.settings = with_replicas_waited(settings, sentinel.url, wait_replicas)
    await fleet.start(["one", "two"])
    make_client = sentinel_client(sentinel)
    loop = asyncio.get_running_loop()
    async with FirstSeenOn(settings, make_client) as seen, Producer(settings) as producer:
        load = Load(producer, seen, per_tick=10, tick_s=0.05)
        load.start()
        await load.until(lambda: len(seen.raw) >= 200, 30, "the load to flow")
        sentinel.replica.freeze()
        redis_cli(sentinel.primary.port, "CLIENT", "KILL", "TYPE", "replica")
        cut_at, sent_at_cut = loop.time(), len(load.sent)  # no replica hears of later writes
        await load.until(lambda: len(load.sent) >= sent_at_cut + 100, 30, "load after the cut")
        killed_at = loop.time()
        kill_primary(sentinel)
        sentinel.replica.thaw()
        await promoted(sentinel)
        # an operator brings a replica back (WAIT 1 holds every write until one is there)
        await asyncio.to_thread(sentinel.rejoin_as_replica)
        await load.stop()
        # every request is processed, stored (as its worker believes) and committed
        await wait_until_committed(settings, len(load.sent), timeout_s=60)
        first = seen.records()
        before_cut = {rid for rid, at in seen.seen_at.items() if at < cut_at}
        # seen on the old primary, surely written after the cut (FirstSeen polls every 50 ms)
        surely_cut = {rid for rid, at in seen.seen_at.items() if cut_at + 0.1 <= at < killed_at}
    stored = await stored_results(make_client, settings, list(load.sent))
    runs, unreadable = read_call_log(fleet.call_log)
    ledger = judge(load.sent, stored, runs, first, unreadable)
    lost = set(ledger.lost)
    print(f"\nwait_replicas={wait_replicas}: {ledger.summary()}; answered before the cut "
          f"{len(before_cut)}, seen surely after it {len(surely_cut)}, lost {len(lost)}")
    assert not lost & before_cut, "a result the replica had received was lost"
    assert all(ledger.runs[rid] == 1 for rid in lost), "a lost result was recomputed"
    if wait_replicas:
        ledger.assert_holds(exactly_once=True)  # nothing lost, nothing run twice
    else:
        assert surely_cut and surely_cut <= lost, "what the replica missed is lost"
        assert not ledger.wrong and not ledger.changed and not ledger.duplicates
