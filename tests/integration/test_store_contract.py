"""One contract, every ResultStore: the in-memory store used by the stages' unit tests
behaves as the Redis store does on every point the worker and its clients rely on."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest

from inferpool.errors import ResultTimeout
from inferpool.protocol import (
    ErrorInfo,
    LoadSummary,
    ResultRecord,
    ResultStatus,
    now_ms,
)
from inferpool.protocol.wire import Encoding, WireTensor
from results import RequestState, ResultStore


def ok(request_id: str, value: object = 1) -> ResultRecord:
    return ResultRecord(id=request_id, status=ResultStatus.OK, outputs=value, model="echo")


async def test_the_first_write_wins(store: ResultStore) -> None:
    assert await store.write([(ok("a", 1), Encoding.MSGPACK)]) == 1
    assert await store.write([(ok("a", 2), Encoding.MSGPACK), (ok("b"), Encoding.JSON)]) == 1
    first = await store.get("a")
    assert first.state is RequestState.OK and first.record == ok("a", 1)
    assert (await store.get("b")).record == ok("b")


async def test_unknown_then_pending_then_answered(store: ResultStore) -> None:
    assert (await store.get("p")).state is RequestState.UNKNOWN
    await store.mark_accepted(["p"])
    assert (await store.get("p")).state is RequestState.PENDING
    error = ResultRecord(id="p", status=ResultStatus.ERROR, error=ErrorInfo("x", "y"))
    await store.write([(error, Encoding.MSGPACK)])
    assert (await store.get("p")).state is RequestState.ERROR


async def test_attempts_count_up_and_a_result_forgets_them(store: ResultStore) -> None:
    assert await store.count_attempts(["s", "t"]) == [1, 1]
    assert await store.count_attempts(["s"]) == [2]
    assert await store.count_attempts(["s"], delta=-1) == [1]
    await store.write([(ok("s"), Encoding.MSGPACK)], settled=["s"])
    assert await store.count_attempts(["s", "t"]) == [1, 2]
    await store.mark_accepted(["t-request"], released=["t", "never-counted"])
    assert await store.count_attempts(["t", "never-counted"]) == [2, 1]
    assert (await store.get("t-request")).state is RequestState.PENDING


async def test_an_output_that_cannot_be_encoded_is_stored_as_invalid_output(
    store: ResultStore,
) -> None:
    await store.write([(ok("nan", math.nan), Encoding.JSON)])
    record = (await store.get("nan")).record
    assert record is not None and record.status is ResultStatus.ERROR
    assert record.error is not None and record.error.code == "invalid_output"


async def test_tensors_round_trip(store: ResultStore) -> None:
    tensor = WireTensor("float32", (2,), b"\x00\x00\x80?\x00\x00\x00@")
    await store.write([(ok("t", {"y": tensor}), Encoding.MSGPACK)])
    record = await store.wait("t", timeout_s=1)
    assert record.outputs == {"y": tensor}


async def test_wait_many_yields_results_written_before_and_during_the_wait(
    store: ResultStore,
) -> None:
    await store.write([(ok("early"), Encoding.MSGPACK)])

    async def late() -> None:
        await asyncio.sleep(0.05)
        await store.write([(ok("late"), Encoding.MSGPACK), (ok("other"), Encoding.MSGPACK)])

    writing = asyncio.create_task(late())
    seen = [record.id async for record in store.wait_many(["early", "late", "early"], 5)]
    await writing
    assert sorted(seen) == ["early", "late"]


async def test_wait_many_times_out_naming_what_is_missing(store: ResultStore) -> None:
    await store.write([(ok("here"), Encoding.MSGPACK)])
    seen: list[str] = []
    with pytest.raises(ResultTimeout, match="missing"):
        async for record in store.wait_many(["here", "missing"], timeout_s=0.2):
            seen.append(record.id)
    assert seen == ["here"]


async def test_wait_times_out_with_a_result_timeout(store: ResultStore) -> None:
    with pytest.raises(ResultTimeout, match="'never'"):
        await store.wait("never", timeout_s=0.1)


async def test_a_wait_stopped_early_releases_at_once(store: ResultStore) -> None:
    await store.write([(ok("x"), Encoding.MSGPACK)])
    async with contextlib.aclosing(store.wait_many(["x", "y"], timeout_s=30)) as records:
        async for record in records:
            assert record.id == "x"
            break


async def test_load_summaries_one_per_worker_and_stale_ones_skipped(store: ResultStore) -> None:
    fresh = LoadSummary("w1", {"normal": 5}, 10.0, 20.0, 40.0, now_ms())
    await store.publish_load("m", fresh, ttl_s=60)
    await store.publish_load("m", LoadSummary("w2", {}, updated_ms=now_ms() - 60_000), ttl_s=60)
    newer = LoadSummary("w1", {"normal": 3}, 11.0, 20.0, 40.0, now_ms())
    await store.publish_load("m", newer, ttl_s=60)
    assert await store.load("m") == [newer]
    assert await store.load("other") == []


async def test_a_cancel_is_seen_only_for_its_request(store: ResultStore) -> None:
    await store.request_cancel("c1")
    assert await store.cancel_requested(["c1", "c2"]) == [True, False]
    assert (await store.get("c1")).state is RequestState.UNKNOWN  # no result is made for it


async def test_starting_attempts_counts_them_and_reads_the_cancel_flags(
    store: ResultStore,
) -> None:
    await store.request_cancel("req-b")
    assert await store.start_attempts(["rec-a", "rec-b"], ["req-a", "req-b"]) == (
        [1, 1], [False, True])
    assert await store.start_attempts(["rec-a"], ["req-a"]) == ([2], [False])
    assert await store.count_attempts(["rec-b"], delta=0) == [1]
    assert await store.start_attempts([], []) == ([], [])
