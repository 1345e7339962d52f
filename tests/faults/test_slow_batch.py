"""Batches slower than max_poll_interval_ms.

aiokafka drops a member whose application has not called getmany() for max_poll_interval_ms.
The worker fetches on while the model computes in its own thread, so a slow forward() must
cost it nothing. When its fetching does stall past the limit, the worker must lose its
partitions without storing a stale batch over a newer result, rejoin, and not loop.
"""

from __future__ import annotations

from collections.abc import Callable
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
    settings: InferpoolSettings,
    fleet: Fleet,
    factory: str,
    requests: int,
    enough: Callable[[WorkerProcess], bool] = lambda worker: False,
    first: str | None = None,
    delay_s: float = BATCH_SECONDS,
) -> tuple[WorkerProcess, Ledger]:
    """A trickle of ``requests`` (or fewer, once ``enough`` holds), all answered; ``first``,
    if given, is sent ahead of it."""
    env = {
        "INFERPOOL_MAX_POLL_INTERVAL_MS": str(MAX_POLL_INTERVAL_MS),
        DELAY_ENV: str(delay_s),
    }
    [worker] = await fleet.start(["slow"], factory, env)
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen, per_tick=1, tick_s=0.5)
        if first is not None:
            await load.send_one(first)
        load.start()
        await load.until(
            lambda: len(load.sent) >= requests or enough(worker), 60, "the trickle to end"
        )
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
    # than the session timeout: the group must drop the member, and the worker rejoin.
    stall_s = settings.session_timeout_ms / 1000 + 2
    worker, ledger = await trickle_through(
        settings, fleet, "stall_once_echo", requests=20,
        enough=lambda worker: len(lost_partitions(worker)) >= 2, first="stall", delay_s=stall_s,
    )
    # check_invariant (in trickle_through) showed every request answered, none changed.
    lost = lost_partitions(worker)
    assert lost, "a fetch loop stalled past max_poll_interval_ms must lose the partitions"
    assert named(worker, "rebalance.assigned")[-1]["timestamp"] > lost[-1]["timestamp"]
    if len(lost) > 1 or max(ledger.runs.values()) > 2:
        raise Looping(
            f"the worker lost its partitions {len(lost)} times under a steady load of "
            f"{ledger.sent} requests at 2/s; {ledger.duplicate_runs} duplicate runs; "
            f"{len(named(worker, 'commit.failed'))} commit.failed events"
        )
    assert not ledger.changed, "a result was answered twice with different contents"
