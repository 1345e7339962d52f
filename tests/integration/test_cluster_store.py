"""The result store on a real Redis Cluster (3 primaries, 3 replicas, joined by
``redis-cli --cluster create``): the store contract, with sharded and with plain pub/sub;
a batch costs one round trip per primary; a slot moved under the store's feet; and a
thousand requests through two worker processes, answered once, spread over every primary."""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
from ha_helpers import cluster, cluster_client, results_per_primary, stored_results
from pool_helpers import WorkerProcess, collect, read_calls, wait_until_committed
from redis.asyncio.cluster import ClusterNode, RedisCluster
from test_store_contract import (
    ok,
    test_a_wait_stopped_early_releases_at_once,
    test_an_output_that_cannot_be_encoded_is_stored_as_invalid_output,
    test_attempts_count_up_and_a_result_forgets_them,
    test_tensors_round_trip,
    test_the_first_write_wins,
    test_unknown_then_pending_then_answered,
    test_wait_many_times_out_naming_what_is_missing,
    test_wait_many_yields_results_written_before_and_during_the_wait,
    test_wait_times_out_with_a_result_timeout,
)

from inferpool.embedded_ha import EmbeddedRedisCluster, redis_cli
from inferpool.protocol import ResultKeys
from inferpool.protocol.wire import Encoding
from inferpool.settings import InferpoolSettings, RedisSettings
from producer.client import Producer, SubmitRequest
from results import RedisResultStore, RequestState, ResultStore

CONTRACT = [  # run here against the cluster, as test_store_contract runs them elsewhere
    test_the_first_write_wins,
    test_unknown_then_pending_then_answered,
    test_attempts_count_up_and_a_result_forgets_them,
    test_an_output_that_cannot_be_encoded_is_stored_as_invalid_output,
    test_tensors_round_trip,
    test_wait_many_yields_results_written_before_and_during_the_wait,
    test_wait_many_times_out_naming_what_is_missing,
    test_wait_times_out_with_a_result_timeout,
    test_a_wait_stopped_early_releases_at_once,
]
__all__ = ["cluster", *(test.__name__ for test in CONTRACT)]


@pytest.fixture
def on_cluster(settings: InferpoolSettings, cluster: EmbeddedRedisCluster) -> InferpoolSettings:
    return settings.model_copy(update={"redis": settings.redis.model_copy(
        update={"url": cluster.url})})


@pytest.fixture(params=["sharded", "plain"])
async def store(
    request: pytest.FixtureRequest, on_cluster: InferpoolSettings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ResultStore]:
    """The contract's store: on the cluster, with sharded pub/sub (Redis >= 7, the default
    here) and with the plain pub/sub a Redis 6 cluster gets."""
    if request.param == "plain":
        monkeypatch.setattr("results.cluster.supports_sharded_pubsub", lambda client: False)
    backend = RedisResultStore(
        on_cluster.redis, ResultKeys(on_cluster.result_key_prefix), ttl_s=60, poll_interval_s=30
    )
    async with backend:
        yield backend


async def test_a_batch_costs_one_round_trip_per_primary(
    on_cluster: InferpoolSettings, cluster: EmbeddedRedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, int]] = []  # (node, commands) per pipeline sent
    original = ClusterNode.execute_pipeline

    async def counted(node: ClusterNode, commands: list[Any]) -> bool:
        sent.append((node.name, len(commands)))
        return await original(node, commands)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", counted)
    keys = ResultKeys(on_cluster.result_key_prefix)
    batch = [(ok(f"rt-{n}", n), Encoding.MSGPACK) for n in range(64)]
    async with RedisResultStore(on_cluster.redis, keys, ttl_s=60) as store:
        await store.mark_accepted(["warm-up"])  # reads the slot map (CLUSTER SLOTS) first
        sent.clear()
        assert await store.write(batch) == 64
        assert len(sent) == 3 and {name for name, _ in sent} == {
            f"127.0.0.1:{p.port}" for p in cluster.primaries()
        }
        assert [commands for _, commands in sent] == [1, 1, 1]  # one script per primary
        sent.clear()
        assert await store.count_attempts([f"rt-{n}" for n in range(64)]) == [1] * 64
        assert len(sent) == 3
    ids = [f"rt-{n}" for n in range(64)]
    stored = await stored_results(cluster_client(cluster), on_cluster, ids)
    assert {rid: record.outputs for rid, record in stored.items()} == {
        f"rt-{n}": n for n in range(64)
    }


async def test_a_wait_listens_on_each_result_s_own_shard(
    on_cluster: InferpoolSettings, cluster: EmbeddedRedisCluster
) -> None:
    keys = ResultKeys(on_cluster.result_key_prefix)
    ids = [f"sh-{n}" for n in range(12)]
    raw = cluster_client(cluster)()
    await raw.initialize()
    owners = {rid: raw.get_node_from_key(keys.done_channel(rid)).port for rid in ids}
    await raw.aclose()
    assert len(set(owners.values())) == 3

    def listeners(rid: str) -> tuple[int, int]:
        """(sharded, plain) subscribers of the id's done channel on its shard's primary."""
        channel = keys.done_channel(rid)
        port = owners[rid]
        sharded = redis_cli(port, "PUBSUB", "SHARDNUMSUB", channel).split()[1]
        plain = redis_cli(port, "PUBSUB", "NUMSUB", channel).split()[1]
        return int(sharded), int(plain)

    async with RedisResultStore(on_cluster.redis, keys, ttl_s=60, poll_interval_s=30) as store:
        waiting = asyncio.create_task(collect_ids(store, ids))
        await wait_until(lambda: all(listeners(rid) == (1, 0) for rid in ids), 10,
                         "a sharded subscription per id, on its own shard")
        await store.write([(ok(rid), Encoding.MSGPACK) for rid in ids])
        assert sorted(await asyncio.wait_for(waiting, 10)) == sorted(ids)
    assert all(listeners(rid) == (0, 0) for rid in ids)  # released


async def collect_ids(store: ResultStore, ids: list[str]) -> list[str]:
    return [record.id async for record in store.wait_many(ids, timeout_s=20)]


async def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


def node_id(port: int) -> str:
    return redis_cli(port, "CLUSTER", "MYID").strip()


def move_empty_slot(cluster: EmbeddedRedisCluster, slot: int, to_port: int) -> None:
    """Give an empty slot to another primary (as the last step of a resharding does)."""
    target = node_id(to_port)
    redis_cli(to_port, "CLUSTER", "SETSLOT", str(slot), "NODE", target)
    for node in cluster.primaries():
        if node.port != to_port:
            redis_cli(node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", target)


async def test_a_slot_moved_apart_from_its_node_is_written_slot_by_slot(
    on_cluster: InferpoolSettings, cluster: EmbeddedRedisCluster
) -> None:
    keys = ResultKeys(on_cluster.result_key_prefix)
    raw = cluster_client(cluster)()
    await raw.initialize()
    owner = {n: raw.get_node_from_key(keys.result(f"mv-{n}")).port for n in range(40)}
    slot = {n: raw.keyslot(keys.result(f"mv-{n}")) for n in range(40)}
    await raw.aclose()
    home = owner[0]
    moved = next(n for n in range(1, 40) if owner[n] == home and slot[n] != slot[0]
                 and redis_cli(home, "CLUSTER", "COUNTKEYSINSLOT", str(slot[n])).strip() == "0")
    elsewhere = next(p.port for p in cluster.primaries() if p.port != home)
    together = [n for n in range(40) if owner[n] == home]
    async with RedisResultStore(on_cluster.redis, keys, ttl_s=60) as store:
        await store.mark_accepted(["warm-up"])  # the store's slot map is now read
        move_empty_slot(cluster, slot[moved], elsewhere)  # ... and stale for that slot
        batch = [(ok(f"mv-{n}", n), Encoding.MSGPACK) for n in together]
        assert await store.write(batch) == len(together)  # each counted once, as new
        assert await store.count_attempts([f"mv-{n}" for n in together]) == [1] * len(together)
    ids = [f"mv-{n}" for n in together]
    stored = await stored_results(cluster_client(cluster), on_cluster, ids)
    assert {rid: record.outputs for rid, record in stored.items()} == {
        f"mv-{n}": n for n in together
    }
    assert redis_cli(elsewhere, "EXISTS", keys.result(f"mv-{moved}")).strip() == "1"


OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_cluster_acls() -> dict[str, list[str]]:
    """The documented users' rules, with the additions a cluster needs, for ``prefix``."""
    text = OPERATIONS.read_text()
    rules = dict(re.findall(r"^ACL SETUSER (\S+) (.*)$", text, flags=re.MULTILINE))
    extra = re.search(r"On Redis Cluster the worker also needs `([^`]+)`\s+and the client "
                      r"`([^`]+)`", text)
    assert extra, "docs/operations.md names what a cluster adds to the ACLs"
    return {"inferpool-worker": [*rules["inferpool-worker"].split(), *extra[1].split()],
            "inferpool-client": [*rules["inferpool-client"].split(), *extra[2].split()]}


async def test_workers_and_clients_need_only_the_documented_cluster_acls(
    on_cluster: InferpoolSettings, cluster: EmbeddedRedisCluster
) -> None:
    prefix = on_cluster.result_key_prefix
    passwords = {"inferpool-worker": "w-pass", "inferpool-client": "c-pass"}
    for user, rules in documented_cluster_acls().items():
        rules = [rule.replace("inferpool:*", f"{prefix}:*") for rule in rules]
        rules = [f">{passwords[user]}" if rule.startswith(">") else rule for rule in rules]
        for node in cluster.nodes:  # ACLs are per node
            redis_cli(node.port, "ACL", "SETUSER", user, "reset", *rules)
    seeds = on_cluster.redis.url.removeprefix("redis+cluster://")
    worker = RedisSettings(url=f"redis+cluster://inferpool-worker:w-pass@{seeds}")
    client = RedisSettings(url=f"redis+cluster://inferpool-client:c-pass@{seeds}")
    keys = ResultKeys(prefix)
    ids = [f"acl-{n}" for n in range(12)]  # on every primary
    try:
        async with RedisResultStore(client, keys, poll_interval_s=30) as reader:
            waiting = asyncio.create_task(collect_ids(reader, ids))
            async with RedisResultStore(worker, keys, ttl_s=60) as writer:
                await writer.check_access()  # what a worker proves at start
                assert await writer.count_attempts(ids) == [1] * len(ids)
                await writer.mark_accepted(["acl-pending"])
                assert await writer.write([(ok(rid), Encoding.MSGPACK) for rid in ids]) == 12
            assert sorted(await asyncio.wait_for(waiting, 10)) == sorted(ids)
            assert (await reader.get("acl-pending")).state is RequestState.PENDING
        # and no more: a client cannot write, a worker cannot read
        for user, command in (("inferpool-client", ("SET", keys.result("x"), "forged")),
                              ("inferpool-worker", ("GET", keys.result("acl-1")))):
            as_user = RedisCluster.from_url(f"redis://{user}:{passwords[user]}@{seeds.split(',')[0]}")
            with pytest.raises(redis.exceptions.NoPermissionError):
                await as_user.execute_command(*command)
            await as_user.aclose()
    finally:
        for node in cluster.nodes:
            redis_cli(node.port, "ACL", "DELUSER", *passwords)


@pytest.mark.slow
async def test_a_thousand_requests_through_two_workers_spread_over_every_primary(
    on_cluster: InferpoolSettings, cluster: EmbeddedRedisCluster, tmp_path: Path
) -> None:
    settings = on_cluster
    workers = [WorkerProcess(settings, tmp_path, f"worker-{index}") for index in range(2)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            await worker.wait_for_event("rebalance.assigned", timeout_s=60)
        inputs = [{"n": index} for index in range(1000)]
        async with Producer(settings) as producer:
            ids = await producer.submit_many(SubmitRequest("echo", value) for value in inputs)
        results = await collect(settings, ids, timeout_s=90)  # ResultReader on the cluster
        await wait_until_committed(settings, len(ids), timeout_s=30)
        for worker in workers:
            worker.signal(signal.SIGTERM)
        codes = [await worker.wait_exit() for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert codes == [0, 0]
    assert [results[i].outputs for i in ids] == inputs
    calls = Counter(call["n"] for call in read_calls(workers[0].call_log))
    assert sorted(calls) == list(range(1000)) and set(calls.values()) == {1}
    assert len({result.worker for result in results.values()}) == 2
    stored = await stored_results(cluster_client(cluster), settings, ids)
    assert stored == results  # what the reader saw is what the cluster holds, one per id
    spread = results_per_primary(cluster, settings.result_key_prefix)
    assert sum(spread.values()) == 1000 and len(spread) == 3
    assert min(spread.values()) >= 250, f"results per primary: {spread}"
