"""The clean paths: a SIGTERM drain, and workers joining and leaving, all under a steady load.
No request may be lost or processed twice, and the group must settle quickly."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from fleet import Fleet, Load, assignment, event_time, named, wait_until
from invariants import FirstSeen, check_invariant
from pool_helpers import wait_until_committed
from testing_models import GATE_ENV

from inferpool.settings import InferpoolSettings
from producer.client import Producer

pytestmark = pytest.mark.slow


async def test_sigterm_under_load_drains_and_the_survivor_takes_over_quickly(
    settings: InferpoolSettings, fleet: Fleet
) -> None:
    settings = settings.model_copy(update={"max_batch_size": 8, "max_wait_ms": 20})
    fleet.settings = settings
    every = set(range(settings.request_topic_partitions))
    # One after the other: the leaver joins in a second generation of the group. (Members of
    # a Tansu group's first generation, number 0, never send LeaveGroup: aiokafka only sends
    # it when generation > 0, so their partitions would move after the session timeout.)
    [stayer] = await fleet.start(["stayer"])
    [leaver] = await fleet.start(["leaver"])
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen, per_tick=10, tick_s=0.05)  # 200 requests/s
        load.start()
        await load.until(lambda: len(seen.raw) >= 300, 30, "the load to flow")
        leaver.signal(signal.SIGTERM)
        code = await leaver.wait_exit(30)
        await load.until(lambda: assignment(stayer) == every, 20, "the stayer to take over")
        after_takeover = len(load.sent)
        await load.until(lambda: len(seen.raw) >= after_takeover + 200, 30, "more answers")
        await load.stop()
        first = await seen.wait_all(60)
    ledger = await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=True)
    assert code == 0
    assert named(leaver, "worker.stopped"), "the leaver did not finish its drain"
    # It left the group on its way out: the survivor holds everything well before the
    # leaver's session could have timed out.
    stopped = event_time(named(leaver, "worker.stopped")[-1])
    taken_over = event_time(named(stayer, "rebalance.assigned")[-1])
    assert 0 <= taken_over - stopped < settings.session_timeout_ms / 1000
    workers = {record.worker for record in first.values()}
    assert len(workers) == 2
    assert ledger.sent >= 500


async def test_a_worker_joins_and_another_leaves_under_load(
    settings: InferpoolSettings, fleet: Fleet
) -> None:
    first_worker, second = await fleet.start(["first", "second"])
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen, per_tick=10, tick_s=0.05)
        load.start()
        await load.until(lambda: len(seen.raw) >= 200, 30, "the load to flow")
        joiner = fleet.spawn("joiner")
        await load.until(lambda: bool(assignment(joiner)), 30, "the joiner to get partitions")
        marker = len(load.sent)
        await load.until(lambda: len(seen.raw) >= marker + 100, 30, "answers after the join")
        first_worker.signal(signal.SIGTERM)
        code = await first_worker.wait_exit(30)

        await load.until(
            lambda: fleet.settled([second, joiner]), 30, "the survivors to share every partition"
        )
        marker = len(load.sent)
        await load.until(lambda: len(seen.raw) >= marker + 100, 30, "answers after the leave")
        await load.stop()
        first = await seen.wait_all(60)
    ledger = await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=True)
    assert code == 0
    for worker in (second, joiner):
        assert worker.process is not None and worker.process.poll() is None, f"{worker.name} died"
    for worker in (first_worker, second, joiner):
        assert not named(worker, "worker.task_failed"), f"{worker.name}: a loop failed"
    second.signal(signal.SIGTERM)
    joiner.signal(signal.SIGTERM)
    assert [await second.wait_exit(30), await joiner.wait_exit(30)] == [0, 0]
    assert {record.worker for record in first.values()} >= {
        named(joiner, "worker.started")[0]["worker"]
    }
    assert ledger.sent >= 400


REQUESTS = 4


class DuplicateOnRebalance(AssertionError):
    """A request ran twice although no worker failed: only a rebalance happened."""


async def test_a_rebalance_during_preparation_runs_nothing_twice(
    settings: InferpoolSettings, fleet: Fleet, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    # The model's prepare() blocks at the gate: the fetch loop holds a fetched chunk there.
    [preparer] = await fleet.start(["preparer"], "gated_prepare_echo", {GATE_ENV: str(gate)})
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen)
        await load.burst(REQUESTS)
        await wait_until((gate / "entered").exists, 30, "the chunk to be in prepare()")
        fleet.spawn("joiner")  # the group rebalances while the chunk is being prepared

        def revoked() -> bool:
            return any(e["partitions"] for e in named(preparer, "rebalance.revoked"))

        await wait_until(revoked, 30, "the preparer's partitions to be revoked")
        (gate / "open").touch()
        first = await seen.wait_all(60)
        await wait_until_committed(settings, REQUESTS, timeout_s=60)
    ledger = await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=False)
    if ledger.duplicate_runs:
        raise DuplicateOnRebalance(
            f"{ledger.duplicate_runs} duplicate runs of {REQUESTS} requests on a clean "
            f"rebalance; runs per request: {sorted(ledger.runs.values())}"
        )
