"""The worker's stages, unit-tested together around the in-memory result store: admission
(fetch, intake, back-pressure), the batch engine (batches, poison, expiry, drain),
settlement (one path for every outcome) and rebalances. No broker, no Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import testing_models
from stage_fakes import PARTITION, StageKit, packed, pending, raw_record, records

from inferpool.protocol import ResultStatus
from worker.models.base import ListModel
from worker.models.echo import EchoModel


class Recording(EchoModel):
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def forward(self, batch: Any) -> Any:
        self.batches.append(list(batch))
        return batch


class Gate(EchoModel):
    """Each batch waits at the gate (in the model thread) until it opens."""

    def __init__(self) -> None:
        import threading

        self.entered = threading.Event()
        self.open = threading.Event()

    def forward(self, batch: Any) -> Any:
        self.entered.set()
        self.open.wait(10)
        return batch


class BadPrepare(ListModel):
    name = "badprep"

    def prepare(self, items: Any) -> list[Any]:
        if "bad" in items:
            raise ValueError("cannot tokenize")
        return list(items)

    def forward(self, batch: Any) -> Any:
        return batch


def retries(kit: StageKit) -> float:
    return kit.metrics.registry.get_sample_value("inferpool_result_store_retries_total") or 0.0


async def wait_for(condition: Any, timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.002)


# --- admission -> engine -> settlement ----------------------------------------------------


async def test_fetched_records_are_answered_and_their_offsets_committable() -> None:
    model = Recording()
    kit = StageKit(model, max_batch_size=4)
    kit.consumer.pending = records(10)
    async with kit.running():
        found = await kit.results([f"r{i}" for i in range(10)])
        await wait_for(lambda: kit.tracker.committable() == {PARTITION: 10})
    assert {rid: r.outputs for rid, r in found.items()} == {f"r{i}": i for i in range(10)}
    assert all(len(batch) <= 4 for batch in model.batches)
    assert sorted(x for batch in model.batches for x in batch) == list(range(10))
    assert kit.tracker.unanswered() == 0


async def test_bad_records_get_an_error_under_their_key_and_a_dead_letter_copy() -> None:
    kit = StageKit(EchoModel())
    kit.consumer.pending = [
        raw_record(b"\xc1", b"undecodable", 0),
        raw_record(packed({"version": 1, "id": "nomodel", "model": "nope", "inputs": 1}),
                   b"nomodel", 1),
        raw_record(b"\xc1", None, 2),  # no id anywhere: only a dead-letter copy
        *records(1, start=3),
    ]
    async with kit.running():
        found = await kit.results(["undecodable", "nomodel", "r3"])
        await wait_for(lambda: kit.tracker.committable() == {PARTITION: 4})
    assert found["undecodable"].error.code == "malformed_request"  # type: ignore[union-attr]
    assert found["nomodel"].error.code == "unknown_model"  # type: ignore[union-attr]
    assert found["r3"].status is ResultStatus.OK
    assert sorted(r.record.offset for r in kit.dead_letters.sent) == [0, 1, 2]


async def test_a_request_that_fails_to_prepare_is_rejected_alone() -> None:
    kit = StageKit(BadPrepare())
    kit.consumer.pending = [
        raw_record(packed({"version": 1, "id": i, "model": "badprep", "inputs": i}),
                   i.encode(), n) for n, i in enumerate(["good", "bad", "fine"])
    ]
    async with kit.running():
        found = await kit.results(["good", "bad", "fine"])
    assert found["good"].outputs == "good" and found["fine"].outputs == "fine"
    assert found["bad"].error is not None and found["bad"].error.code == "invalid_input"
    assert [r.request_id for r in kit.dead_letters.sent] == ["bad"]


async def test_fetching_pauses_at_the_request_limit_and_resumes_when_answered() -> None:
    model = Gate()
    kit = StageKit(model, max_inflight_requests=3)
    kit.consumer.pending = records(6)
    async with kit.running():
        await asyncio.to_thread(model.entered.wait, 5)
        await wait_for(lambda: kit.consumer.paused)
        assert kit.tracker.unanswered() == 3 and len(kit.consumer.pending) == 3
        model.open.set()
        await kit.results([f"r{i}" for i in range(6)])
    assert not kit.consumer.pending


async def test_a_drain_cuts_short_a_fetch_that_waits_for_a_rebalance() -> None:
    # aiokafka's getmany waits while the group rebalances (up to a session timeout when a
    # member died): a draining worker must not wait for it, nor lose what it holds
    model = Gate()
    kit = StageKit(model)
    kit.consumer.pending = records(2)

    async def drained_while_fetching() -> None:
        async with kit.running():
            await asyncio.to_thread(model.entered.wait, 5)
            kit.consumer.stuck = True
            await kit.consumer.inside_stuck_fetch.wait()
            model.open.set()

    await asyncio.wait_for(drained_while_fetching(), 10)  # not the fetch's "for ever"
    assert set(kit.store.values) == {"r0", "r1"}
    assert kit.tracker.unanswered() == 0


async def test_fetching_pauses_at_the_byte_limit() -> None:
    model = Gate()
    kit = StageKit(model, max_inflight_bytes=1)
    kit.consumer.pending, kit.consumer.per_fetch = records(4), 1
    async with kit.running():
        await asyncio.to_thread(model.entered.wait, 5)
        await wait_for(lambda: kit.consumer.paused)
        assert kit.tracker.held_bytes() >= 1 and len(kit.consumer.pending) == 3
        model.open.set()
        await kit.results([f"r{i}" for i in range(4)])


async def test_a_store_outage_holds_answers_until_the_store_is_back() -> None:
    kit = StageKit(EchoModel())
    async with kit.running():
        kit.store.unavailable = True
        kit.consumer.pending = records(3)
        await wait_for(lambda: retries(kit) >= 2)
        assert kit.tracker.committable() == {} and kit.tracker.unanswered() == 3
        kit.store.unavailable = False
        found = await kit.results(["r0", "r1", "r2"])
    assert len(found) == 3 and kit.tracker.committable() == {PARTITION: 3}


# --- the batch engine ----------------------------------------------------------------------


async def test_an_expired_request_is_answered_expired_without_running() -> None:
    model = Recording()
    kit = StageKit(model)
    async with kit.running(fetching=False):
        past = time.monotonic() - 1
        kit.engine.admit([pending(kit, "late", 1, deadline_monotonic=past),
                          pending(kit, "fine", 2, offset=1)])
        found = await kit.results(["late", "fine"])
    assert found["late"].status is ResultStatus.EXPIRED
    assert found["fine"].status is ResultStatus.OK
    assert [x for batch in model.batches for x in batch] == [2]


async def test_a_request_past_max_attempts_is_poison_and_never_runs() -> None:
    model = Recording()
    kit = StageKit(model, max_attempts=2)
    # earlier runs of offsets 0 and 1 never ended
    kit.store.attempts.update({"requests/0/0": 2, "requests/0/1": 1})
    async with kit.running(fetching=False):
        kit.engine.admit([pending(kit, "killer", "k"), pending(kit, "suspect", "s", offset=1),
                          pending(kit, "fresh", "f", offset=2)])
        found = await kit.results(["killer", "suspect", "fresh"])
    assert found["killer"].error is not None and found["killer"].error.code == "poison_request"
    assert [r.request_id for r in kit.dead_letters.sent] == ["killer"]
    assert found["suspect"].outputs == "s" and found["fresh"].outputs == "f"
    assert ["s"] in model.batches, "a suspect runs alone"
    assert "k" not in [x for batch in model.batches for x in batch]


async def test_a_failing_request_gets_model_error_and_its_neighbours_their_results() -> None:
    kit = StageKit(testing_models.ExplodingModel())
    async with kit.running(fetching=False):
        kit.engine.admit([pending(kit, "a", "ok", model="exploding"),
                          pending(kit, "b", "boom", model="exploding", offset=1)])
        found = await kit.results(["a", "b"])
    assert found["a"].outputs == "ok"
    assert found["b"].error is not None and found["b"].error.code == "model_error"


async def test_drain_runs_whatever_is_queued_at_once() -> None:
    kit = StageKit(Recording(), max_wait_s=60)  # nothing would close by waiting
    async with kit.store, kit.engine, kit.preparation:
        loop = asyncio.create_task(kit.engine.run())
        kit.engine.admit([pending(kit, f"q{i}", i, offset=i) for i in range(3)])
        kit.engine.drain()
        await asyncio.wait_for(loop, 5)
        assert kit.store.record("q2") is not None and kit.engine.queued() == 0


# --- rebalances -------------------------------------------------------------------------------


async def test_a_revocation_leaves_queued_requests_and_waits_for_started_ones() -> None:
    model = Gate()
    kit = StageKit(model, max_batch_size=1, max_wait_s=0)
    async with kit.store, kit.engine, kit.preparation:
        loop = asyncio.create_task(kit.engine.run())
        kit.engine.admit([pending(kit, f"g{i}", i, offset=i) for i in range(4)])
        await asyncio.to_thread(model.entered.wait, 5)
        revoking = asyncio.create_task(kit.rebalance.on_revoked([PARTITION]))
        await asyncio.sleep(0.05)
        assert not revoking.done(), "it waits for the started batches"
        model.open.set()
        await asyncio.wait_for(revoking, 5)
        started = [rid for rid in ("g0", "g1", "g2", "g3") if kit.store.record(rid)]
        assert 1 <= len(started) <= 2  # at most MAX_BATCHES_IN_FLIGHT had started
        assert kit.consumer.commits == [{PARTITION: len(started)}]
        assert kit.tracker.assigned() == [] and kit.engine.queued() == 0
        kit.engine.drain()
        await asyncio.wait_for(loop, 5)
    assert all(kit.store.record(rid) is None for rid in ("g2", "g3"))


async def test_requests_prepared_after_their_partition_was_revoked_never_start() -> None:
    kit = StageKit(Recording())
    async with kit.store, kit.engine, kit.preparation:
        kit.tracker.start_revoking([PARTITION])
        await kit.admission.admit(records(2))
        assert kit.engine.queued() == 0 and kit.tracker.unanswered() == 0


@pytest.mark.parametrize("count", [1, 5])
async def test_commits_cover_exactly_what_is_answered(count: int) -> None:
    kit = StageKit(EchoModel())
    async with kit.running(fetching=False):
        kit.engine.admit([pending(kit, f"c{i}", i, offset=i) for i in range(count)])
        await kit.results([f"c{i}" for i in range(count)])
        assert await kit.committer.commit()
    assert kit.consumer.commits == [{PARTITION: count}]


# --- poison found at admission ----------------------------------------------------------------


class PrepareSpy(ListModel):
    """Records which items it prepares, and the store's attempt counts while it prepares the
    item "culprit" (what a crash at that moment would leave behind)."""

    name = "spy"

    def __init__(self, store: Any) -> None:
        self.store = store
        self.prepared: list[Any] = []
        self.counts_during_culprit: dict[str, int] | None = None

    def prepare(self, items: Any) -> list[Any]:
        if "culprit" in items:
            self.counts_during_culprit = dict(self.store.attempts)
        self.prepared.extend(items)
        return list(items)

    def forward(self, batch: Any) -> Any:
        return batch


def spy_records(*names: str) -> list[Any]:
    return [raw_record(packed({"version": 1, "id": n, "model": "spy", "inputs": n}),
                       n.encode(), offset) for offset, n in enumerate(names)]


async def test_a_record_past_max_attempts_at_admission_is_poison_and_never_read() -> None:
    model = PrepareSpy(None)
    kit = StageKit(model, max_attempts=2)
    model.store = kit.store
    kit.store.attempts.update({"requests/0/1": 2})  # two earlier deliveries died in it
    kit.consumer.pending = spy_records("a", "culprit", "b")
    async with kit.running():
        found = await kit.results(["a", "culprit", "b"])
        await wait_for(lambda: kit.tracker.committable() == {PARTITION: 3})
    assert found["culprit"].error is not None
    assert found["culprit"].error.code == "poison_request"
    assert "culprit" not in model.prepared and sorted(model.prepared) == ["a", "b"]
    assert [r.request_id for r in kit.dead_letters.sent] == ["culprit"]
    assert not kit.store.attempts, "every counter is settled"


async def test_a_suspect_is_counted_alone_so_a_crash_blames_only_it() -> None:
    model = PrepareSpy(None)
    kit = StageKit(model, max_attempts=3)
    model.store = kit.store
    # an earlier delivery died while the whole chunk was held: all three are suspects now
    kit.store.attempts.update({"requests/0/0": 1, "requests/0/1": 1, "requests/0/2": 1})
    kit.consumer.pending = spy_records("a", "culprit", "b")
    async with kit.running():
        found = await kit.results(["a", "culprit", "b"])
    assert all(record.status is ResultStatus.OK for record in found.values())
    during = model.counts_during_culprit
    assert during is not None
    assert during.get("requests/0/1") == 2, "the culprit carries this delivery's attempt"
    assert during.get("requests/0/0", 0) <= 1 and during.get("requests/0/2", 0) <= 1, during


async def test_an_unanswering_store_admits_uncounted_rather_than_stall() -> None:
    kit = StageKit(EchoModel())
    async with kit.running():
        kit.store.unavailable = True
        kit.consumer.pending = records(2)
        await wait_for(lambda: retries(kit) >= 1)  # admitted: the engine's screen waits
        kit.store.unavailable = False
        found = await kit.results(["r0", "r1"])
    assert len(found) == 2


async def test_a_hung_batch_fails_the_engine_with_stage_hung() -> None:
    from inferpool.errors import StageHung

    model = Gate()
    kit = StageKit(model)
    kit.engine = type(kit.engine)(
        kit.registry, kit.engine._batcher, kit.engine._poison_screen, kit.settlement,
        kit.answers, kit.metrics, stage_timeout_s=0.2,
    )
    async with kit.store, kit.engine, kit.preparation:
        kit.engine.admit([pending(kit, "stuck", 1)])
        with pytest.raises(StageHung, match="INFERPOOL_STAGE_TIMEOUT_S"):
            await asyncio.wait_for(kit.engine.run(), 10)
        model.open.set()
    assert kit.store.record("stuck") is None and kit.tracker.committable() == {}


async def test_requests_that_arrive_while_the_model_is_busy_form_one_batch() -> None:
    model = Gate()
    kit = StageKit(model, max_batch_size=32, max_wait_s=0.005)
    async with kit.store, kit.engine, kit.preparation:
        loop = asyncio.create_task(kit.engine.run())
        kit.engine.admit([pending(kit, "first", 0)])
        await asyncio.to_thread(model.entered.wait, 5)
        for index in range(1, 11):  # trickling in, each waiting past max_wait, model busy
            kit.engine.admit([pending(kit, f"later-{index}", index, offset=index)])
            await asyncio.sleep(0.01)
        assert kit.engine.queued() == 10, "nothing closed while the model was busy"
        model.open.set()
        found = await kit.results([f"later-{i}" for i in range(1, 11)])
        kit.engine.drain()
        await asyncio.wait_for(loop, 5)
    assert {record.batch_size for record in found.values()} == {10}


async def test_the_model_runs_the_next_batch_while_the_last_one_is_being_stored() -> None:
    model = Recording()
    kit = StageKit(model, max_batch_size=32, max_wait_s=0.001)
    store_open = asyncio.Event()
    write = kit.store.write

    async def held_write(*args: Any, **kwargs: Any) -> int:
        await store_open.wait()
        return await write(*args, **kwargs)

    kit.store.write = held_write  # type: ignore[method-assign]
    async with kit.store, kit.engine, kit.preparation:
        loop = asyncio.create_task(kit.engine.run())
        kit.engine.admit([pending(kit, "first", 0)])
        await wait_for(lambda: len(model.batches) == 1)
        kit.engine.admit([pending(kit, "second", 1, offset=1)])
        await wait_for(lambda: len(model.batches) == 2)  # not held behind the first's store
        assert kit.store.record("first") is None, "the first batch is still being stored"
        store_open.set()
        found = await kit.results(["first", "second"])
        kit.engine.drain()
        await asyncio.wait_for(loop, 5)
    assert [record.outputs for record in (found["first"], found["second"])] == [0, 1]
