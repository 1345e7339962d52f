"""kill -9 of a worker in the two windows at-least-once is about: after the model ran and
before the result is written (the request must run again), and after the result is written
but before its offset is committed (it runs again, and the duplicate changes nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet import Fleet, Load, wait_until, worker_id
from invariants import FirstSeen, check_invariant, input_key, read_call_log, read_results
from pool_helpers import committed_total, wait_until_committed
from redis.asyncio import Redis
from testing_models import GATE_ENV

from inferpool.protocol import ResultKeys
from inferpool.settings import InferpoolSettings
from producer.client import Producer

pytestmark = pytest.mark.slow

REQUESTS = 20


def processed_ids(fleet: Fleet, sent: dict[str, str]) -> set[str]:
    runs, _ = read_call_log(fleet.call_log)
    return {rid for rid, value in sent.items() if runs[input_key(value)]}


async def stored_ids(settings: InferpoolSettings, ids: list[str]) -> set[str]:
    client = Redis.from_url(settings.redis.url)
    try:
        return set(await read_results(client, ResultKeys(settings.result_key_prefix), ids))
    finally:
        await client.aclose()


async def test_kill_9_after_inference_before_the_result_write(
    settings: InferpoolSettings, fleet: Fleet, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    [holder] = await fleet.start(["holder"], "held_echo", {GATE_ENV: str(gate)})
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen)
        ids = await load.burst(REQUESTS)
        # HeldEcho ran a batch and recorded it, then blocks before returning its outputs.
        await wait_until((gate / "entered").exists, 30, "the model to hold a processed batch")
        held = processed_ids(fleet, load.sent)
        assert held, "the call log shows no processed request"
        assert not await stored_ids(settings, ids), "nothing can be stored while the model holds"
        holder.kill()  # SIGKILL: processed, never written
        rescuer = fleet.spawn("rescuer")
        first = await seen.wait_all(60)
    ledger = await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=False)
    assert {ledger.runs[rid] for rid in held} == {2}, "each held request runs again, once"
    assert {ledger.runs[rid] for rid in set(ids) - held} == {1}
    assert {record.worker for record in first.values()} == {worker_id(rescuer)}


async def test_kill_9_after_the_result_write_before_the_offset_commit(
    settings: InferpoolSettings, fleet: Fleet
) -> None:
    # Commits only at a rebalance or a drain: the window after the write stays open.
    [writer] = await fleet.start(["writer"], env={"INFERPOOL_COMMIT_INTERVAL_MS": "600000"})
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen)
        ids = await load.burst(REQUESTS)
        first = await seen.wait_all(30)  # a reader saw every result, written by `writer`
        assert await committed_total(settings) == 0, "no offset may be committed yet"
        writer.kill()  # SIGKILL: written, never committed
        fleet.spawn("rescuer")
        await wait_until_committed(settings, REQUESTS, timeout_s=60)  # the rescuer re-ran them
        await wait_until(
            lambda: len(processed_ids(fleet, load.sent)) == REQUESTS, 10, "the call log"
        )
    ledger = await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=False)
    assert set(ledger.runs.values()) == {2}, "every request ran again after the kill"
    # ... and the duplicate run changed nothing: the results are still the first writer's
    # (check_invariant compared every stored result with what the reader saw first).
    assert {record.worker for record in first.values()} == {worker_id(writer)}
    assert ledger.answered == len(ids)
