"""The shared back-off and the sync bridge that the blocking facades stand on."""

from __future__ import annotations

import asyncio
import threading

import pytest

from inferpool.backoff import Backoff, retrying
from inferpool.errors import LifecycleError, ResultStoreUnavailable, ResultTimeout
from inferpool.lifecycle import Service
from inferpool.sync import SyncBridge


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(first_s=0.1, max_s=0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff.attempt == 5
    backoff.reset()
    assert (backoff.upcoming_s, backoff.attempt) == (0.1, 0)
    with pytest.raises(ValueError):
        Backoff(first_s=1, max_s=0.5)


async def test_retrying_retries_what_it_is_told_to_and_reports_each_retry() -> None:
    outcomes: list[Exception | str] = [
        ResultStoreUnavailable("down"), ResultStoreUnavailable("down"), "stored"
    ]
    retries: list[tuple[str, int]] = []

    async def action() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = await retrying(
        action, (ResultStoreUnavailable,), lambda error, tries, delay: retries.append(
            (str(error), tries)), Backoff(first_s=0.001, max_s=0.002)
    )
    assert result == "stored" and retries == [("down", 1), ("down", 2)]


async def test_retrying_gives_up_after_max_tries_and_never_retries_other_errors() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ResultStoreUnavailable("down")

    with pytest.raises(ResultStoreUnavailable):
        await retrying(failing, (ResultStoreUnavailable,), lambda *_: None,
                       Backoff(first_s=0.001), max_tries=3)
    assert calls == 3

    async def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await retrying(broken, (ResultStoreUnavailable,), lambda *_: None)


class Counter(Service):
    def __init__(self) -> None:
        self.value = 0
        self.loop_thread: str | None = None

    async def add(self, amount: int) -> int:
        self._require_started()
        self.loop_thread = threading.current_thread().name
        await asyncio.sleep(0)
        self.value += amount
        return self.value

    async def hang(self) -> None:
        await asyncio.Event().wait()


def test_a_bridge_runs_the_service_on_its_own_thread_from_many_threads() -> None:
    bridge = SyncBridge(Counter(), "SyncCounter")
    bridge.start()
    threads = [threading.Thread(target=lambda: bridge.call(bridge.service.add(1)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert bridge.call(bridge.service.add(0)) == 8
    assert bridge.service.loop_thread == "inferpool-SyncCounter"
    bridge.close()
    bridge.close()  # idempotent
    assert not bridge.service.started
    with pytest.raises(LifecycleError, match="SyncCounter is not started"):
        bridge.call(bridge.service.add(1))


async def test_a_bridge_works_from_inside_a_running_event_loop() -> None:
    bridge = SyncBridge(Counter(), "SyncCounter")
    await asyncio.to_thread(bridge.start)
    assert bridge.call(bridge.service.add(2)) == 2  # blocking here is the caller's choice
    await asyncio.to_thread(bridge.close)


def test_a_stuck_call_raises_the_owners_error_and_a_second_start_fails() -> None:
    bridge = SyncBridge(Counter(), "SyncCounter", stuck_after_s=0.05)
    bridge.start()
    with pytest.raises(ResultTimeout, match=r"did not answer within 0\.05 s"):
        bridge.call(bridge.service.hang())
    with pytest.raises(LifecycleError, match="already started"):
        bridge.start()
    bridge.close()
