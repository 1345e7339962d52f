"""Helpers of the tests on highly available Redis (a cluster, Sentinel): the deployments as
module fixtures, and the fault suite's invariant read through plain redis-py clients of
those deployments (``RedisCluster``, ``Sentinel.master_for``), never through inferpool's
own Redis code, which is what is under test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from invariants import FirstSeen, Ledger, judge, read_call_log, read_results
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from inferpool.embedded_ha import EmbeddedRedisCluster, EmbeddedSentinel, redis_cli
from inferpool.protocol import ResultKeys, ResultRecord
from inferpool.settings import InferpoolSettings

RawClient = redis.asyncio.Redis | RedisCluster
ClientFactory = Callable[[], RawClient]


def deployment(
    made: EmbeddedRedisCluster | EmbeddedSentinel, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """For ``yield from`` in a fixture: start it; afterwards stop it, print its logs if a
    test of the module failed, remove its files."""
    failed_before = request.session.testsfailed
    try:
        with made:
            yield made
    finally:
        if request.session.testsfailed > failed_before:
            print(f"\n----- {type(made).__name__} logs -----\n{made.log_tail()}")
        made.cleanup()


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[EmbeddedRedisCluster]:
    """Three primaries, each with a replica, joined by ``redis-cli --cluster create``."""
    yield from deployment(EmbeddedRedisCluster(primaries=3, replicas=1), request)


@pytest.fixture
def sentinel(request: pytest.FixtureRequest) -> Iterator[EmbeddedSentinel]:
    """A primary, its replica and a sentinel, for one test (its failover changes them)."""
    yield from deployment(EmbeddedSentinel(), request)


def cluster_client(cluster: EmbeddedRedisCluster) -> ClientFactory:
    def make() -> RawClient:
        nodes = [ClusterNode("127.0.0.1", node.port) for node in cluster.nodes]
        return RedisCluster(startup_nodes=nodes, socket_timeout=2, socket_connect_timeout=2)

    return make


def sentinel_client(sentinel: EmbeddedSentinel) -> ClientFactory:
    def make() -> RawClient:
        sentinels = Sentinel([("127.0.0.1", sentinel.sentinel.port)], socket_timeout=2)
        primary: redis.asyncio.Redis = sentinels.master_for(
            sentinel.service, socket_timeout=2, socket_connect_timeout=2
        )
        return primary

    return make


async def close_raw(client: RawClient) -> None:
    """Close a client of ``cluster_client`` or ``sentinel_client`` (and its sentinels)."""
    pool = getattr(client, "connection_pool", None)
    await client.aclose()
    if isinstance(pool, SentinelConnectionPool):
        await pool.sentinel_manager.aclose()


class FirstSeenOn(FirstSeen):
    """FirstSeen polling through ``make_client`` (a cluster or sentinel client)."""

    def __init__(self, settings: InferpoolSettings, make_client: ClientFactory) -> None:
        super().__init__(settings)
        self._make_client = make_client

    async def __aenter__(self) -> FirstSeenOn:
        self._client = self._make_client()
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        client, self._client = self._client, None
        await super().__aexit__(*exc_info)
        if client is not None:
            await close_raw(client)


async def stored_results(
    make_client: ClientFactory, settings: InferpoolSettings, ids: list[str]
) -> dict[str, ResultRecord]:
    client = make_client()
    try:
        raw = await read_results(client, ResultKeys(settings.result_key_prefix), ids)
    finally:
        await close_raw(client)
    return {rid: ResultRecord.decode(value) for rid, value in raw.items()}


async def check_invariant_on(
    make_client: ClientFactory,
    settings: InferpoolSettings,
    sent: Mapping[str, Any],
    call_log: Path,
    first_seen: Mapping[str, ResultRecord],
    *,
    exactly_once: bool,
) -> Ledger:
    """``invariants.check_invariant``, reading the results through ``make_client``."""
    stored = await stored_results(make_client, settings, list(sent))
    runs, unreadable = read_call_log(call_log)
    ledger = judge(sent, stored, runs, first_seen, unreadable)
    ledger.assert_holds(exactly_once)
    return ledger


def results_per_primary(cluster: EmbeddedRedisCluster, prefix: str) -> dict[int, int]:
    """How many result keys under ``prefix`` each primary holds, by port (``SCAN``)."""
    counts = {}
    for primary in cluster.primaries():
        keys = redis_cli(primary.port, "--scan", "--pattern", f"{prefix}:*:result").split()
        counts[primary.port] = len(keys)
    return counts
