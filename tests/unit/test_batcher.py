"""The batcher alone: when batches close, what they hold, and what never reaches a model."""

from __future__ import annotations

import pytest

from inferpool.protocol import RequestEnvelope
from inferpool.protocol.wire import Encoding
from worker.execution.batcher import Batcher, CloseReason
from worker.models.config import BatchLimits
from worker.offsets import OffsetToken, TopicPartition
from worker.request import PendingRequest

PARTITION = TopicPartition("requests", 0)


def pending(
    index: int,
    *,
    model: str = "echo",
    fetched: float = 0.0,
    deadline: float | None = None,
    partition: TopicPartition = PARTITION,
    cost: int = 1,
) -> PendingRequest:
    envelope = RequestEnvelope(id=f"r{index}", model=model, inputs=index)
    return PendingRequest(
        envelope, index, OffsetToken(partition, 1, index), Encoding.MSGPACK, fetched, 0,
        deadline, cost=cost,
    )


def test_full_batch_closes_at_once() -> None:
    batcher = Batcher(max_batch_size=4, max_wait_s=1.0)
    for index in range(6):
        batcher.add(pending(index))
    batch = batcher.take(now=0.0)
    assert batch is not None
    assert batch.reason is CloseReason.FULL
    assert [r.id for r in batch.requests] == ["r0", "r1", "r2", "r3"]
    assert len(batcher) == 2


def test_partial_batch_waits_for_max_wait() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=0.010)
    batcher.add(pending(0, fetched=1.000))
    batcher.add(pending(1, fetched=1.004))
    assert batcher.take(now=1.009) is None
    assert batcher.next_due() == 1.010
    batch = batcher.take(now=1.010)
    assert batch is not None and batch.reason is CloseReason.WAITED
    assert [r.id for r in batch.requests] == ["r0", "r1"]
    assert batcher.next_due() is None and len(batcher) == 0


def test_a_deadline_closes_the_batch_early() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=1.0)
    batcher.observe("echo", 0.050)
    batcher.add(pending(0, fetched=0.0))
    batcher.add(pending(1, fetched=0.0, deadline=0.200))
    assert batcher.next_due() == pytest.approx(0.150)
    assert batcher.take(now=0.149) is None
    batch = batcher.take(now=0.1501)
    assert batch is not None and batch.reason is CloseReason.DEADLINE
    assert len(batch.requests) == 2


def test_expired_requests_never_reach_the_batch() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=0.0)
    batcher.add(pending(0, deadline=0.5))
    batcher.add(pending(1))
    batch = batcher.take(now=1.0)
    assert batch is not None
    assert [r.id for r in batch.expired] == ["r0"]
    assert [r.id for r in batch.requests] == ["r1"]


def test_expired_requests_do_not_count_toward_the_batch_size() -> None:
    batcher = Batcher(max_batch_size=2, max_wait_s=0.0)
    batcher.add(pending(0, deadline=0.5))
    for index in range(1, 4):
        batcher.add(pending(index))
    batch = batcher.take(now=1.0)
    assert batch is not None
    assert [r.id for r in batch.requests] == ["r1", "r2"] and len(batch.expired) == 1


def test_a_batch_never_mixes_models() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=0.0)
    for index in range(4):
        batcher.add(pending(index, model="a" if index % 2 else "b"))
    first, second = batcher.take(now=1.0), batcher.take(now=1.0)
    assert first is not None and second is not None
    assert {r.model for r in first.requests} == {first.model}
    assert {r.model for r in second.requests} == {second.model}
    assert {first.model, second.model} == {"a", "b"}
    assert batcher.take(now=1.0) is None


def test_the_most_urgent_model_goes_first() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=0.010)
    batcher.add(pending(0, model="late", fetched=0.005))
    batcher.add(pending(1, model="early", fetched=0.001))
    batch = batcher.take(now=1.0)
    assert batch is not None and batch.model == "early"


def test_drain_closes_everything_now() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=10.0)
    batcher.add(pending(0, fetched=0.0))
    assert batcher.take(now=0.0) is None
    batch = batcher.take(now=0.0, drain=True)
    assert batch is not None and batch.reason is CloseReason.DRAIN


def test_discard_removes_requests_of_revoked_partitions() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=0.0)
    other = TopicPartition("requests", 1)
    batcher.add(pending(0, deadline=5.0))
    batcher.add(pending(1, partition=other, deadline=3.0))
    batcher.add(pending(2))
    removed = batcher.discard(lambda request: request.token.partition == other)
    assert [r.id for r in removed] == ["r1"]
    assert len(batcher) == 2
    batcher.observe("echo", 0.0)
    # the removed request's deadline no longer pulls the batch forward
    batcher.max_wait_s = 100.0
    assert batcher.next_due() == 5.0


def test_batch_ids_are_unique() -> None:
    batcher = Batcher(max_batch_size=1, max_wait_s=0.0)
    for index in range(3):
        batcher.add(pending(index))
    ids = [batch.id for batch in iter(lambda: batcher.take(now=1.0), None)]
    assert len(ids) == len(set(ids)) == 3


def text_batcher(max_batch_size: int, max_batch_tokens: int | None) -> Batcher:
    limits = {"text": BatchLimits(max_batch_size, max_batch_tokens)}
    return Batcher(max_batch_size=64, max_wait_s=0.0, limits=limits)


def test_a_batch_holds_the_oldest_and_its_nearest_in_length() -> None:
    batcher = text_batcher(3, None)
    for index, cost in enumerate([10, 50, 11, 49, 12, 48]):
        batcher.add(pending(index, model="text", cost=cost))
    first = batcher.take(now=1.0)
    assert first is not None and [r.cost for r in first.requests] == [10, 11, 12]
    second = batcher.take(now=1.0)
    assert second is not None and [r.cost for r in second.requests] == [50, 49, 48]


def test_the_padded_token_cap_limits_the_batch() -> None:
    batcher = text_batcher(8, 100)
    for index in range(4):
        batcher.add(pending(index, model="text", cost=30))
    batch = batcher.take(now=0.0)
    assert batch is not None and batch.reason is CloseReason.FULL
    assert len(batch.requests) == 3  # 3 x 30 = 90 tokens; a 4th would pad to 120
    assert len(batcher) == 1


def test_the_oldest_runs_even_when_it_alone_exceeds_the_cap() -> None:
    batcher = text_batcher(8, 100)
    batcher.add(pending(0, model="text", cost=500))
    batcher.add(pending(1, model="text", cost=5))
    batch = batcher.take(now=1.0)
    assert batch is not None and [r.id for r in batch.requests] == ["r0"]


def test_requests_left_behind_keep_their_order_and_deadlines() -> None:
    batcher = text_batcher(2, None)
    costs = [10, 90, 11, 80]
    for index, cost in enumerate(costs):
        batcher.add(pending(index, model="text", cost=cost, deadline=50.0 + index))
    first = batcher.take(now=0.0)
    assert first is not None and [r.id for r in first.requests] == ["r0", "r2"]
    second = batcher.take(now=0.0)
    assert second is not None and [r.id for r in second.requests] == ["r1", "r3"]
    assert len(batcher) == 0 and batcher.next_due() is None


def test_stale_deadlines_do_not_pull_a_batch_forward() -> None:
    batcher = Batcher(max_batch_size=2, max_wait_s=100.0)
    batcher.add(pending(0, deadline=1.0))
    batcher.add(pending(1, deadline=9.0))
    batcher.add(pending(2))
    batch = batcher.take(now=0.0)
    assert batch is not None and [r.id for r in batch.requests] == ["r0", "r1"]
    assert batcher.next_due() == 100.0  # only r2 is left: the taken deadlines are gone


# --- while the model is busy, batches keep collecting ---------------------------------------


def test_a_busy_model_keeps_the_next_batch_collecting_past_max_wait() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=0.01)
    for index in range(3):
        batcher.add(pending(index, fetched=0.0))
    assert batcher.take(now=0.5, busy=True) is None, "waiting alone never closes while busy"
    assert batcher.next_due(busy=True) is None
    for index in range(3, 6):
        batcher.add(pending(index, fetched=0.4))
    batch = batcher.take(now=0.5, busy=False)  # the model is free: it closes at once
    assert batch is not None and batch.reason is CloseReason.WAITED
    assert len(batch.requests) == 6, "what arrived while the model was busy joined the batch"


def test_a_busy_model_still_gets_a_full_batch_and_a_deadline() -> None:
    batcher = Batcher(max_batch_size=4, max_wait_s=0.01)
    for index in range(4):
        batcher.add(pending(index))
    full = batcher.take(now=0.0, busy=True)
    assert full is not None and full.reason is CloseReason.FULL
    batcher.add(pending(9, deadline=1.0))
    assert batcher.next_due(busy=True) == 1.0
    assert batcher.take(now=0.5, busy=True) is None
    urgent = batcher.take(now=1.0, busy=True)
    assert urgent is not None and urgent.reason is CloseReason.DEADLINE


def test_an_idle_model_waits_at_most_max_wait() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=0.01)
    batcher.add(pending(0, fetched=1.0))
    assert batcher.next_due(busy=False) == pytest.approx(1.01)
    assert batcher.take(now=1.005) is None
    batch = batcher.take(now=1.01)
    assert batch is not None and batch.reason is CloseReason.WAITED


def test_draining_closes_even_while_busy() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=10)
    batcher.add(pending(0))
    batch = batcher.take(now=0.0, drain=True, busy=True)
    assert batch is not None and batch.reason is CloseReason.DRAIN


def test_a_long_queue_of_equal_costs_closes_oldest_first_and_drops_the_expired() -> None:
    batcher = Batcher(max_batch_size=4, max_wait_s=0.01)
    for index in range(1000):
        batcher.add(pending(index, deadline=0.5 if index == 2 else None))
    batch = batcher.take(now=1.0)
    assert batch is not None and batch.reason is CloseReason.FULL
    assert [r.id for r in batch.requests] == ["r0", "r1", "r3", "r4"]
    assert [r.id for r in batch.expired] == ["r2"]
    assert len(batcher) == 995
    batcher.add(pending(1000, cost=50))  # costs differ now: shaping by cost again
    taken = [r.id for r in batcher.take(now=1.0).requests]  # type: ignore[union-attr]
    assert taken == ["r5", "r6", "r7", "r8"], "the oldest and its nearest in cost"
    assert len(batcher) == 992
