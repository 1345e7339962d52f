"""Clients waiting on a result across a Redis restart, and clients that start waiting after
the result was written: every one of them gets it (ResultReader.wait)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from fleet import Fleet, named, using_redis, wait_until
from invariants import FirstSeen, check_invariant
from pool_helpers import reader_for
from testing_models import GATE_ENV

from inferpool.embedded import EmbeddedRedis
from inferpool.settings import InferpoolSettings
from producer.client import Producer

pytestmark = pytest.mark.slow


async def test_a_waiting_client_gets_its_result_across_a_redis_restart(
    settings: InferpoolSettings, fleet: Fleet, private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = fleet.settings = using_redis(settings, private_redis.url)
    gate = tmp_path / "gate"
    gate.mkdir()
    # The model holds the request at the gate: its result is written only when we say so.
    [worker] = await fleet.start(["worker"], "gated_echo", {GATE_ENV: str(gate)})
    async with (
        FirstSeen(settings) as seen,
        Producer(settings) as producer,
        reader_for(settings) as early_reader,
    ):
        request_id = await producer.submit("echo", "across-a-restart")
        seen.expect([request_id])
        early = asyncio.create_task(early_reader.wait(request_id, timeout_s=60))
        await wait_until((gate / "entered").exists, 30, "the model to hold the request")
        os.kill(private_redis.pid, signal.SIGKILL)
        private_redis.stop()
        (gate / "open").touch()  # the result is made while Redis is down: its write retries
        await wait_until(
            lambda: any(e["action"] == "write" for e in named(worker, "results.store_retry")),
            30,
            "the worker to retry the result write",
        )
        assert not early.done(), "nothing can be read while Redis is down"
        private_redis.start()
        waited = await asyncio.wait_for(early, 60)
        async with reader_for(settings) as late_reader:  # starts after the result is there
            late = await late_reader.wait(request_id, timeout_s=10)
            looked_up = await late_reader.get(request_id)
        first = await seen.wait_all(30)
    await check_invariant(
        settings, {request_id: "across-a-restart"}, fleet.call_log, first, exactly_once=True
    )
    assert waited == late == looked_up.record == first[request_id]
    assert waited.outputs == "across-a-restart"
