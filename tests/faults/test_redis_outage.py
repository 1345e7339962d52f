"""Redis killed (SIGKILL) under load and restarted on the same port and directory (its
append-only file keeps what it had stored): workers hold their batches, retry with backoff,
commit nothing they have not stored, and resume. A long outage must not grow a worker's
memory (fetching pauses at INFERPOOL_MAX_INFLIGHT_REQUESTS) nor cost it its group."""

from __future__ import annotations

import os
import signal

import pytest
from fleet import Fleet, Load, metrics_port, named, scrape, using_redis, wait_until
from invariants import FirstSeen, check_invariant
from pool_helpers import committed_total

from inferpool.embedded import EmbeddedRedis
from inferpool.protocol import ResultStatus, now_ms
from inferpool.settings import InferpoolSettings
from producer.client import Producer

pytestmark = pytest.mark.slow

MAX_INFLIGHT = 64
OUTAGE_RETRIES = 10


def kill(redis: EmbeddedRedis) -> None:
    """SIGKILL: no shutdown, no last AOF rewrite; what was written to the AOF stays."""
    os.kill(redis.pid, signal.SIGKILL)
    redis.stop()  # reaps it


async def test_redis_killed_and_restarted_mid_load(
    settings: InferpoolSettings, fleet: Fleet, private_redis: EmbeddedRedis
) -> None:
    settings = fleet.settings = using_redis(settings, private_redis.url)
    workers = await fleet.start(["one", "two"])
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen, per_tick=10, tick_s=0.05)
        load.start()
        await load.until(lambda: len(seen.raw) >= 200, 30, "the load to flow")
        kill(private_redis)

        def retried(times: int) -> bool:
            return all(
                any(e["attempt"] >= times for e in named(w, "results.store_retry")) for w in workers
            )

        # Down for a while: every worker is retrying, backing off (0.05 s doubling). Nothing
        # can be stored meanwhile, so the group's committed offsets must not move.
        await load.until(lambda: retried(5), 30, "both workers to retry 5 times")
        committed_early = await committed_total(settings)
        await load.until(lambda: retried(7), 30, "both workers to retry 7 times")
        assert await committed_total(settings) == committed_early, "committed while down"
        answered_before_restart = set(seen.raw)
        private_redis.start()
        marker = len(load.sent)
        await load.until(lambda: len(seen.raw) >= marker + 100, 60, "answers after the restart")
        await load.stop()
        first = await seen.wait_all(60)
    ledger = await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=True)
    backoffs = [e["backoff_s"] for w in workers for e in named(w, "results.store_retry")]
    assert max(backoffs) > min(backoffs), "retries back off"
    for worker in workers:
        assert worker.process is not None and worker.process.poll() is None
        assert not named(worker, "worker.task_failed")
        assert not [e for e in named(worker, "rebalance.revoked") if e["partitions"]]
    # What a reader saw before the kill is still there after the restart (append-only file),
    # unchanged (check_invariant compared every result with its first reading).
    assert answered_before_restart <= set(first)
    assert ledger.sent >= 300


async def test_a_long_redis_outage_pauses_fetching_and_keeps_the_group(
    settings: InferpoolSettings, fleet: Fleet, private_redis: EmbeddedRedis
) -> None:
    settings = fleet.settings = using_redis(settings, private_redis.url)
    env = {
        "INFERPOOL_MAX_INFLIGHT_REQUESTS": str(MAX_INFLIGHT),
        "INFERPOOL_MAX_POLL_INTERVAL_MS": "4000",  # the outage outlasts this and the session
        # the back-pressure limit is under test, not the normal lane's share of it (which
        # would stop a normal-only load at half the limit, plus what one fetch overshoots)
        "INFERPOOL_LANE_SHARE_NORMAL": "1",
    }
    [worker] = await fleet.start(["worker"], env=env)
    port = metrics_port(worker)
    inflight: list[float] = []  # the worker's inferpool_inflight_requests, every 50 ms

    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen)
        kill(private_redis)
        await load.burst(5 * MAX_INFLIGHT)

        # The outage lasts until a batch was retried 10 times (about 11 s: 3 s of growing
        # backoff, then 2 s apart): past the worker's session timeout and max poll interval.
        async def long_outage() -> bool:
            inflight.append((await scrape(port))["inferpool_inflight_requests"])
            attempts = [e["attempt"] for e in named(worker, "results.store_retry")]
            return max(attempts, default=0) >= OUTAGE_RETRIES

        await wait_until(long_outage, 60, f"{OUTAGE_RETRIES} retries of a batch")
        assert await committed_total(settings) == 0, "nothing is stored: nothing may commit"
        private_redis.start()
        first = await seen.wait_all(60)
    await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=True)
    assert max(inflight) == MAX_INFLIGHT, f"in-flight requests during the outage: {inflight}"
    assert not [e for e in named(worker, "rebalance.revoked") if e["partitions"]], (
        "the worker left its group during the outage"
    )
    assert len(named(worker, "rebalance.assigned")) == 1
    assert not named(worker, "worker.task_failed")


class LeftTheGroup(AssertionError):
    """The worker lost its partitions during a Redis outage."""


async def test_a_long_redis_outage_with_a_request_answered_at_once_keeps_the_group(
    settings: InferpoolSettings, fleet: Fleet, private_redis: EmbeddedRedis
) -> None:
    settings = fleet.settings = using_redis(settings, private_redis.url)
    env = {
        "INFERPOOL_MAX_INFLIGHT_REQUESTS": str(MAX_INFLIGHT),
        "INFERPOOL_MAX_POLL_INTERVAL_MS": "3000",
    }
    [worker] = await fleet.start(["worker"], env=env)
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen)
        kill(private_redis)
        # Its deadline has passed: the worker answers it `expired` at once, without the model.
        late = await producer.submit("echo", "late", deadline_ms=now_ms() - 1000)
        seen.expect([late])
        await load.burst(MAX_INFLIGHT)

        def outage_outlasts_max_poll() -> bool:  # about 5 s: the retries 7 and 8
            attempts = [e["attempt"] for e in named(worker, "results.store_retry")]
            return max(attempts, default=0) >= 8

        await wait_until(outage_outlasts_max_poll, 60, "8 retries of a write")
        private_redis.start()
        first = await seen.wait_all(60)
    expired = first.pop(late)
    assert expired.status is ResultStatus.EXPIRED
    await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=False)
    assert not named(worker, "worker.task_failed")
    lost = [e for e in named(worker, "rebalance.revoked") if e["partitions"]]
    if lost:
        raise LeftTheGroup(
            f"partitions revoked at {lost[0]['timestamp']} after the outage; "
            f"{len(named(worker, 'request.expired'))} request.expired events for 1 request, "
            f"{len(named(worker, 'commit.failed'))} commit.failed"
        )
