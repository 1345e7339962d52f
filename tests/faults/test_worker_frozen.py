"""A worker frozen (SIGSTOP) past its session timeout, then thawed (SIGCONT): the group
gives its partitions to the other worker meanwhile; once thawed, its late batch runs, its
writes change nothing, its commits fail cleanly, and it rejoins the group."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from fleet import Fleet, Load, assignment, named, wait_until, worker_id
from invariants import FirstSeen, check_invariant, read_call_log
from pool_helpers import wait_until_committed
from testing_models import GATE_ENV

from inferpool.settings import InferpoolSettings
from producer.client import Producer

pytestmark = pytest.mark.slow

REQUESTS = 40


async def test_a_frozen_worker_rejoins_and_its_late_work_is_harmless(
    settings: InferpoolSettings, fleet: Fleet, tmp_path: Path
) -> None:
    every = set(range(settings.request_topic_partitions))
    gate = tmp_path / "gate"
    gate.mkdir()
    awake = fleet.spawn("awake")
    # The sleeper's model blocks at the gate before its first batch: when frozen, it holds
    # requests it has fetched and not answered.
    sleeper = fleet.spawn("sleeper", "gated_echo", {GATE_ENV: str(gate)})
    await fleet.settle()
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen)
        await load.burst(REQUESTS)
        await wait_until((gate / "entered").exists, 30, "the sleeper to hold a batch")
        sleeper.signal(signal.SIGSTOP)
        try:
            await wait_until(lambda: assignment(awake) == every, 60, "the awake one to take over")
            first = await seen.wait_all(60)  # everything answered, by the awake worker
            assert {record.worker for record in first.values()} == {worker_id(awake)}
            frozen_at = len(sleeper.events())
            (gate / "open").touch()
        finally:
            sleeper.signal(signal.SIGCONT)

        # Thawed: its late batches run (the call log shows them), it rejoins the group.
        def late_runs() -> int:
            runs, _ = read_call_log(fleet.call_log)
            return sum(count - 1 for count in runs.values())

        await wait_until(lambda: late_runs() > 0, 30, "the sleeper's late batch to run")
        await wait_until(
            lambda: (
                bool(named(sleeper, "rebalance.assigned", after=frozen_at))
                and fleet.settled([awake, sleeper])
            ),
            60,
            "the sleeper to rejoin",
        )
        await wait_until_committed(settings, REQUESTS, timeout_s=30)
    ledger = await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=False)
    assert ledger.duplicate_runs > 0  # the late runs happened, and changed no stored result
    failed = named(sleeper, "commit.failed", after=frozen_at)
    assert failed, "the sleeper's commits after the thaw must fail (it is no longer a member)"
    assert sleeper.process is not None and sleeper.process.poll() is None
    assert not named(sleeper, "worker.task_failed")
