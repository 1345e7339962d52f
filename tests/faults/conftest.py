"""Fixtures of the fault-injection suite: a fleet of worker processes per test, and a
private Redis or broker for the tests that kill or freeze one (the session's services
must stay healthy for every other test)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# The integration helpers (pool_helpers, invariants) are imported by plain name, as the
# integration tests do; pytest puts tests/integration on sys.path only for tests there.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from fleet import Fleet
from services import running

from inferpool.embedded import EmbeddedBroker, EmbeddedRedis
from inferpool.settings import InferpoolSettings


@pytest.fixture
async def fleet(
    request: pytest.FixtureRequest, settings: InferpoolSettings, tmp_path: Path
) -> AsyncIterator[Fleet]:
    """Worker processes for this test; all killed at the end, their logs dumped on failure."""
    workers = Fleet(settings, tmp_path)
    try:
        yield workers
    finally:
        workers.kill_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(workers.log_tails())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, with an append-only file so that it can be
    killed and restarted (same port, same directory) without losing what it stored."""
    yield from running(EmbeddedRedis(appendonly=True))


@pytest.fixture
def private_broker() -> Iterator[EmbeddedBroker]:
    """A Tansu broker of this test's own, to freeze and to stop."""
    yield from running(EmbeddedBroker())
