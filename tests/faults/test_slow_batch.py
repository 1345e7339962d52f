"""Batches slower than max_poll_interval_ms.

aiokafka drops a member whose application has not called getmany() for max_poll_interval_ms.
The worker fetches on while the model computes in its own thread, so a slow forward() must
cost it nothing. When its fetching does stall past the limit, the worker must lose its
partitions without storing a stale batch over a newer result, rejoin, and not loop.
"""

from __future__ import annotations

from typing import Any

import pytest
from fleet import Fleet, Load, named
from invariants import FirstSeen, Ledger, check_invariant
from pool_helpers import WorkerProcess
from testing_models import DELAY_ENV

from inferpool.settings import InferpoolSettings
from producer.client import Producer

pytestmark = pytest.mark.slow

MAX_POLL_INTERVAL_MS = 1500
BATCH_SECONDS = 2.5  # every batch takes longer than max_poll_interval_ms
# A trickle of 2 requests per second, well within capacity (16 per 2.5 s): requests keep
# arriving while batches run.


class Looping(AssertionError):
    """The worker lost its partitions again and again under a steady load."""


async def trickle_through(
    settings: InferpoolSettings, fleet: Fleet, factory: str, requests: int
) -> tuple[WorkerProcess, Ledger]:
    """A trickle of ``requests`` through one worker, all answered."""
    env = {
        "INFERPOOL_MAX_POLL_INTERVAL_MS": str(MAX_POLL_INTERVAL_MS),
        DELAY_ENV: str(BATCH_SECONDS),
    }
    [worker] = await fleet.start(["slow"], factory, env)
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen, per_tick=1, tick_s=0.5)
        load.start()
        await load.until(lambda: len(load.sent) >= requests, 60, "the trickle to end")
        await load.stop()
        first = await seen.wait_all(60)
    ledger = await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=False)
    return worker, ledger


def lost_partitions(worker: WorkerProcess) -> list[dict[str, Any]]:
    return [e for e in named(worker, "rebalance.revoked") if e["partitions"]]


async def test_a_slow_forward_keeps_the_partitions(
    settings: InferpoolSettings, fleet: Fleet
) -> None:
    worker, ledger = await trickle_through(settings, fleet, "slow_echo", requests=12)
    assert not lost_partitions(worker), "the worker polls while the model computes"
    assert not named(worker, "commit.failed")
    assert ledger.duplicate_runs == 0


async def test_a_stalled_fetch_loses_the_partitions_and_recovers_without_looping(
    settings: InferpoolSettings, fleet: Fleet
) -> None:
    # StallOnceEcho blocks the worker's event loop once, on the request "stall", longer
    # than the session timeout: no poll, no heartbeat. A second worker joins meanwhile, so
    # the group must move on without the stalled member (a lone member's fate would hang on
    # a race inside aiokafka between its heartbeat and its next fetch: Tansu does not expire
    # a lone member by itself); once the stall ends, the stalled worker must find its
    # partitions lost, store nothing stale over a newer result, rejoin and not loop.
    stall_s = settings.session_timeout_ms / 1000 + 2
    env = {"INFERPOOL_MAX_POLL_INTERVAL_MS": str(MAX_POLL_INTERVAL_MS), DELAY_ENV: str(stall_s)}
    [worker] = await fleet.start(["stalling"], "stall_once_echo", env)
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen, per_tick=1, tick_s=0.5)
        await load.send_one("stall")
        fleet.spawn("awake")  # joins while the first one stalls
        load.start()
        await load.until(lambda: len(load.sent) >= 20 and bool(lost_partitions(worker)), 90,
                         "the stalled worker to lose its partitions")
        await load.stop()
        first = await seen.wait_all(60)
        await fleet.settle()  # both hold partitions again: the stalled one rejoined
    ledger = await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=False)
    # check_invariant showed every request answered, none changed.
    lost = lost_partitions(worker)
    assert lost, "a fetch loop stalled past the session timeout must lose the partitions"
    assert named(worker, "rebalance.assigned")[-1]["timestamp"] > lost[-1]["timestamp"]
    if len(lost) > 1 or max(ledger.runs.values()) > 2:
        raise Looping(
            f"the worker lost its partitions {len(lost)} times under a steady load of "
            f"{ledger.sent} requests at 2/s; {ledger.duplicate_runs} duplicate runs; "
            f"{len(named(worker, 'commit.failed'))} commit.failed events"
        )
    assert not ledger.changed, "a result was answered twice with different contents"
