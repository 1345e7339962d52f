"""The broker frozen (SIGSTOP) for several seconds under load, then thawed: workers and the
producer recover by themselves, with nothing lost. A producer whose broker is gone reports
BrokerUnavailable, clearly, within its timeout."""

from __future__ import annotations

import time

import pytest
from fleet import Fleet, Load, named, using_broker
from invariants import FirstSeen, check_invariant

from inferpool.embedded import EmbeddedBroker
from inferpool.errors import BrokerUnavailable
from inferpool.settings import InferpoolSettings
from inferpool.topics import GRACE_S
from producer.client import Producer

pytestmark = pytest.mark.slow

STALL_S = 5.0  # the broker stays frozen until the producer has been stalled this long
GONE_TIMEOUT_MS = 2000


async def test_a_frozen_broker_recovers_without_restarts(
    settings: InferpoolSettings, fleet: Fleet, private_broker: EmbeddedBroker
) -> None:
    settings = fleet.settings = using_broker(settings, private_broker.bootstrap_servers)
    workers = await fleet.start(["one", "two"])
    pids = [w.process.pid for w in workers if w.process is not None]
    async with FirstSeen(settings) as seen, Producer(settings) as producer:
        load = Load(producer, seen, per_tick=10, tick_s=0.05)
        load.start()
        await load.until(lambda: len(seen.raw) >= 200, 30, "the load to flow")
        private_broker.freeze()
        try:
            await load.until(lambda: load.stalled_for() >= STALL_S, 30, "the producer to stall")
        finally:
            private_broker.thaw()
        marker = len(load.sent)  # the same producer goes on, and workers answer again
        await load.until(lambda: len(seen.raw) >= marker + 200, 60, "answers after the thaw")
        await load.stop()
        first = await seen.wait_all(60)
    await check_invariant(settings, load.sent, fleet.call_log, first, exactly_once=False)
    assert [w.process.pid for w in fleet.live() if w.process is not None] == pids
    for worker in workers:
        assert not named(worker, "worker.task_failed")


async def test_a_producer_whose_broker_is_gone_reports_broker_unavailable_in_time(
    settings: InferpoolSettings, private_broker: EmbeddedBroker
) -> None:
    settings = using_broker(settings, private_broker.bootstrap_servers)
    kafka = settings.kafka.model_copy(update={"request_timeout_ms": GONE_TIMEOUT_MS})
    settings = settings.model_copy(update={"kafka": kafka})
    limit_s = GONE_TIMEOUT_MS / 1000 + GRACE_S + 1.0
    async with Producer(settings) as producer:
        await producer.submit("echo", "before")  # the topic is auto-created; it works
        private_broker.stop()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as raised:
            await producer.submit("echo", "after")
        took = time.monotonic() - started
    assert took <= limit_s, f"submit took {took:.1f}s to fail"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as raised_at_start:
        async with Producer(settings):
            pass
    took_at_start = time.monotonic() - started
    assert took_at_start <= limit_s, f"start took {took_at_start:.1f}s to fail"
    for error in (raised.value, raised_at_start.value):
        assert error.retriable and error.code == "broker_unavailable"
        assert private_broker.bootstrap_servers in str(error)
        assert "INFERPOOL_KAFKA_BOOTSTRAP_SERVERS" in str(error)
