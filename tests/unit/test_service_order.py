"""Service order alone: lanes with aging, tenants by deficit round-robin, windows put back."""

from __future__ import annotations

from collections import Counter

from inferpool.protocol import Priority, RequestEnvelope
from inferpool.protocol.wire import Encoding
from worker.execution.batcher import Batcher
from worker.execution.service_order import OrderPolicy, ServiceOrder
from worker.offsets import OffsetToken, TopicPartition
from worker.request import PendingRequest

PARTITION = TopicPartition("requests", 0)


def pending(
    index: int,
    priority: Priority = Priority.NORMAL,
    tenant: str | None = None,
    fetched: float = 0.0,
) -> PendingRequest:
    envelope = RequestEnvelope(id=f"r{index}", model="echo", inputs=index, priority=priority,
                               tenant=tenant)
    return PendingRequest(envelope, index, OffsetToken(PARTITION, 1, index), Encoding.MSGPACK,
                          fetched, 0, None)


def drain(order: ServiceOrder) -> list[str]:
    ids = []
    while order:
        entry = order.pop()
        order.served([entry])
        ids.append(entry[1].id)
    return ids


def test_high_before_normal_before_low_when_fetched_together() -> None:
    order = ServiceOrder(OrderPolicy(aging_s=10.0))
    for index, priority in enumerate([Priority.LOW, Priority.NORMAL, Priority.HIGH] * 2):
        order.append((index, pending(index, priority, fetched=float(index) / 100)))
    assert drain(order) == ["r2", "r5", "r1", "r4", "r0", "r3"]


def test_aging_serves_low_before_high_fetched_two_agings_later() -> None:
    order = ServiceOrder(OrderPolicy(aging_s=1.0))
    order.append((0, pending(0, Priority.LOW, fetched=0.0)))
    order.append((1, pending(1, Priority.HIGH, fetched=1.9)))  # within 2 agings: goes first
    order.append((2, pending(2, Priority.HIGH, fetched=2.1)))  # later than 2 agings: after low
    assert drain(order) == ["r1", "r0", "r2"]


def test_tenants_alternate_by_share_inside_a_lane() -> None:
    order = ServiceOrder(OrderPolicy(shares={"big": 2.0}))
    sequence = 0
    for _ in range(6):  # the flood arrives first
        order.append((sequence, pending(sequence, tenant="noisy")))
        sequence += 1
    for tenant in ("quiet", "big", "big", "big", "big"):
        order.append((sequence, pending(sequence, tenant=tenant)))
        sequence += 1
    first_six = [order.pop() for _ in range(6)]
    counts = Counter(entry[1].envelope.tenant for entry in first_six)
    # per round: noisy 1, quiet 1, big 2 (share 2): the quiet one is in the first round
    assert counts == {"noisy": 2, "quiet": 1, "big": 3}
    assert first_six[1][1].envelope.tenant in {"quiet", "big"}


def test_a_window_put_back_keeps_its_order() -> None:
    def filled() -> ServiceOrder:
        order = ServiceOrder()
        for index in range(7):
            order.append((index, pending(index, tenant="a" if index < 5 else "b")))
        return order

    straight = drain(filled())
    order = filled()
    window = [order.pop() for _ in range(4)]
    order.restore(window[2:])
    order.served(window[:2])
    assert [entry[1].id for entry in window[:2]] + drain(order) == straight
    assert straight[:3] == ["r0", "r5", "r1"]  # tenant b's first request in the first round


def test_remove_if_and_a_batch_mixing_lanes_high_first() -> None:
    batcher = Batcher(max_batch_size=4, max_wait_s=0.0)
    for index in range(3):
        batcher.add(pending(index, Priority.LOW))
    batcher.add(pending(3, Priority.HIGH, fetched=0.001))
    batcher.add(pending(4, Priority.NORMAL, fetched=0.002))
    gone = batcher.discard(lambda request: request.id == "r1")
    assert [r.id for r in gone] == ["r1"]
    batch = batcher.take(now=1.0)
    assert batch is not None
    assert [r.id for r in batch.requests] == ["r3", "r4", "r0", "r2"]
    assert len(batcher) == 0


def test_old_envelopes_are_normal_and_without_tenant() -> None:
    envelope = RequestEnvelope.decode(RequestEnvelope(id="a", model="m", inputs=1).encode())
    assert envelope.priority is Priority.NORMAL and envelope.tenant is None
    wire = RequestEnvelope(id="a", model="m", inputs=1).to_wire()
    assert "priority" not in wire and "tenant" not in wire


def test_tenants_that_come_and_go_leave_no_state_behind() -> None:
    batcher = Batcher(max_batch_size=8, max_wait_s=0.0)
    for index in range(2000):  # every request names a tenant of its own
        batcher.add(pending(index, tenant=f"t{index}"))
    batcher.discard(lambda request: request.id.endswith("7"))
    while batcher.take(now=1.0) is not None:
        pass
    assert len(batcher) == 0
    queue = batcher._queues["echo"].requests  # the state under test (private)
    assert all(not lane.tenants for lane in queue._lanes.values())
