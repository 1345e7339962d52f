"""ResultWriter / ResultReader / ``inferpool result`` against a real redis-server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from inferpool.embedded import EmbeddedRedis, free_port
from inferpool.errors import ConfigurationError, ResultStoreUnavailable, ResultTimeout
from inferpool.logs import capture_events
from inferpool.protocol.wire import Encoding, WireTensor
from inferpool.settings import InferpoolSettings, RedisSettings
from inferpool_app import result_command as cli
from results import (
    ErrorInfo,
    RequestState,
    ResultKeys,
    ResultReader,
    ResultRecord,
    ResultStatus,
    ResultWriter,
    SyncResultReader,
    Timings,
)

TTL_S = 60
SLOW_POLL_S = 30.0  # longer than any test: a result must come through the notification


def ok_record(request_id: str, value: float = 1.5) -> ResultRecord:
    tensor = WireTensor("float32", (2,), b"\x00\x00\x80?\x00\x00\x00@")
    return ResultRecord(
        id=request_id, status=ResultStatus.OK, outputs={"y": tensor, "score": value},
        model="echo", worker="w1", batch_size=2,
        timings=Timings(inference_ms=1.25, end_to_end_ms=3.5), finished_ms=1_700_000_000_000,
    )


def error_record(request_id: str) -> ResultRecord:
    return ResultRecord(id=request_id, status=ResultStatus.ERROR,
                        error=ErrorInfo("invalid_input", "inputs must be float32"))


@pytest.fixture
def keys(settings: InferpoolSettings) -> ResultKeys:
    return ResultKeys(settings.result_key_prefix)


@pytest.fixture
async def admin(settings: InferpoolSettings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


@pytest.fixture
async def writer(settings: InferpoolSettings, keys: ResultKeys) -> AsyncIterator[ResultWriter]:
    async with ResultWriter(settings.redis, keys, ttl_s=TTL_S) as result_writer:
        yield result_writer


@pytest.fixture
async def reader(settings: InferpoolSettings, keys: ResultKeys) -> AsyncIterator[ResultReader]:
    async with ResultReader(settings.redis, keys, poll_interval_s=SLOW_POLL_S) as result_reader:
        yield result_reader


async def eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float = 2.0) -> None:
    """Wait until ``condition()`` is true; fail the test after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.005)


def subscribed(admin: Redis, channels: list[str]) -> Callable[[], Awaitable[bool]]:
    """True once every channel has a subscriber."""

    async def check() -> bool:
        counts = await admin.pubsub_numsub(*channels)
        return all(count >= 1 for _, count in counts)

    return check


# --- write and look up -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [Encoding.MSGPACK, Encoding.JSON])
async def test_write_then_get_round_trips(
    writer: ResultWriter, reader: ResultReader, admin: Redis, keys: ResultKeys,
    encoding: Encoding,
) -> None:
    record = ok_record("r1")
    assert await writer.write([(record, encoding)]) == 1
    lookup = await reader.get("r1")
    assert lookup.state is RequestState.OK
    assert lookup.record == record
    stored = await admin.get(keys.result("r1"))
    assert isinstance(stored, bytes) and Encoding.sniff(stored) is encoding
    assert 0 < await admin.ttl(keys.result("r1")) <= TTL_S


async def test_duplicate_write_keeps_the_first_result(
    writer: ResultWriter, reader: ResultReader
) -> None:
    first, second = ok_record("dup", 1.0), error_record("dup")
    assert await writer.write([(first, Encoding.MSGPACK)]) == 1
    assert await writer.write([(second, Encoding.JSON)]) == 0
    assert (await reader.get("dup")).record == first


async def test_batch_write_counts_only_new_results(writer: ResultWriter) -> None:
    await writer.write([(ok_record("a"), Encoding.MSGPACK)])
    batch = [(ok_record(rid), Encoding.MSGPACK) for rid in ("a", "b", "c")]
    assert await writer.write(batch) == 2
    assert await writer.write([]) == 0


async def test_batch_commands_survive_a_flushed_script_cache(
    writer: ResultWriter, reader: ResultReader, admin: Redis
) -> None:
    """A restarted Redis has forgotten the worker's scripts: they are loaded again."""
    await writer.mark_accepted(["f1"])
    await admin.script_flush()
    assert await writer.count_attempts(["f1", "f2"]) == [1, 1]
    await admin.script_flush()
    await writer.mark_accepted(["f2"])
    await admin.script_flush()
    assert await writer.write([(ok_record("f1"), Encoding.MSGPACK)]) == 1
    assert (await reader.get("f1")).record == ok_record("f1")
    assert (await reader.get("f2")).state is RequestState.PENDING


async def test_attempt_counts_add_delta_and_are_dropped_by_the_result(
    writer: ResultWriter, admin: Redis, keys: ResultKeys
) -> None:
    assert await writer.count_attempts(["c1", "c2"]) == [1, 1]
    assert await writer.count_attempts(["c1"], delta=2) == [3]
    assert await writer.count_attempts(["c1"], delta=-1) == [2]
    assert 0 < await admin.ttl(keys.attempts("c1")) <= TTL_S
    await writer.write([(ok_record("c1"), Encoding.MSGPACK)], settled=["c1"])
    assert not await admin.exists(keys.attempts("c1"))
    assert await admin.exists(keys.attempts("c2"))


async def test_get_tells_unknown_pending_and_done(
    writer: ResultWriter, reader: ResultReader
) -> None:
    assert (await reader.get("q")).state is RequestState.UNKNOWN
    await writer.mark_accepted(["q"])
    assert (await reader.get("q")).state is RequestState.PENDING
    await writer.write([(error_record("q"), Encoding.MSGPACK)])
    lookup = await reader.get("q")
    assert lookup.state is RequestState.ERROR
    assert lookup.record is not None and lookup.record.error == ErrorInfo(
        "invalid_input", "inputs must be float32")


async def test_accepted_marker_has_a_ttl(
    writer: ResultWriter, admin: Redis, keys: ResultKeys
) -> None:
    await writer.mark_accepted(["m1", "m2"])
    assert 0 < await admin.ttl(keys.accepted("m2")) <= TTL_S


# --- wait ----------------------------------------------------------------------------------


async def test_wait_gets_a_result_written_later(
    writer: ResultWriter, reader: ResultReader, admin: Redis, keys: ResultKeys
) -> None:
    waiting = asyncio.create_task(reader.wait("later", timeout_s=5))
    await eventually(subscribed(admin, [keys.done_channel("later")]))
    started = time.monotonic()
    await writer.write([(ok_record("later"), Encoding.MSGPACK)])
    assert await waiting == ok_record("later")
    assert time.monotonic() - started < 1.0  # notified, not polled


async def test_wait_after_the_result_was_written(
    writer: ResultWriter, reader: ResultReader
) -> None:
    await writer.write([(ok_record("early"), Encoding.JSON)])
    assert await reader.wait("early", timeout_s=2) == ok_record("early")


async def test_wait_many_yields_each_result_once(
    writer: ResultWriter, reader: ResultReader, admin: Redis, keys: ResultKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("results.waiting.SUBSCRIBE_CHUNK", 64)  # several SUBSCRIBE commands
    ids = [f"m{index}" for index in range(200)]
    await writer.write([(ok_record(rid), Encoding.MSGPACK) for rid in ids[:20]])

    async def write_the_rest() -> None:
        await eventually(subscribed(admin, [keys.done_channel(rid) for rid in ids[20:]]))
        for start in range(20, 200, 45):
            batch = ids[start : start + 45]
            await writer.write([(ok_record(rid), Encoding.MSGPACK) for rid in batch])

    writing = asyncio.create_task(write_the_rest())
    seen = [record.id async for record in reader.wait_many(ids + ids[:10], timeout_s=5)]
    await writing
    assert len(seen) == len(set(seen)) == 200
    assert set(seen) == set(ids)


async def test_wait_times_out_quickly(reader: ResultReader) -> None:
    started = time.monotonic()
    with pytest.raises(ResultTimeout, match=r"'never' within 0\.2s"):
        await reader.wait("never", timeout_s=0.2)
    assert time.monotonic() - started < 1.0


async def test_wait_many_yields_what_arrived_then_times_out(
    writer: ResultWriter, reader: ResultReader
) -> None:
    await writer.write([(ok_record("got"), Encoding.MSGPACK)])
    seen: list[str] = []
    with pytest.raises(ResultTimeout, match="2 of 3 results") as info:
        async for record in reader.wait_many(["got", "x1", "x2"], timeout_s=0.2):
            seen.append(record.id)
    assert seen == ["got"]
    assert "x1" in str(info.value) and "x2" in str(info.value)


async def test_wait_stopped_early_closes_its_subscription(
    writer: ResultWriter, reader: ResultReader, admin: Redis, keys: ResultKeys
) -> None:
    await writer.write([(ok_record("s1"), Encoding.MSGPACK)])
    async with contextlib.aclosing(reader.wait_many(["s1", "s2"], timeout_s=5)) as records:
        async for _ in records:
            break
    assert await admin.pubsub_numsub(keys.done_channel("s2")) == [
        (keys.done_channel("s2").encode(), 0)]


@pytest.mark.parametrize("kill", [["pubsub"], ["pubsub", "normal"]])
async def test_wait_survives_a_killed_connection(
    writer: ResultWriter, reader: ResultReader, admin: Redis, keys: ResultKeys, kill: list[str]
) -> None:
    channel = keys.done_channel("k")
    waiting = asyncio.create_task(reader.wait("k", timeout_s=5))
    await eventually(subscribed(admin, [channel]))
    for client_type in kill:
        await admin.client_kill_filter(_type=client_type)
    assert await admin.pubsub_numsub(channel) == [(channel.encode(), 0)]
    await eventually(subscribed(admin, [channel]))  # the waiter subscribed again
    await writer.write([(ok_record("k"), Encoding.MSGPACK)])
    assert await asyncio.wait_for(waiting, 2) == ok_record("k")


async def test_wait_finds_a_result_written_while_its_connection_was_down(
    writer: ResultWriter, reader: ResultReader, admin: Redis, keys: ResultKeys
) -> None:
    waiting = asyncio.create_task(reader.wait("gap", timeout_s=5))
    await eventually(subscribed(admin, [keys.done_channel("gap")]))
    await admin.client_kill_filter(_type="pubsub")
    await writer.write([(ok_record("gap"), Encoding.MSGPACK)])
    assert await asyncio.wait_for(waiting, 2) == ok_record("gap")


async def test_wait_survives_a_redis_restart(keys: ResultKeys) -> None:
    first = EmbeddedRedis()
    await asyncio.to_thread(first.start)
    second = EmbeddedRedis(port=first.port)
    settings = RedisSettings(url=first.url)
    try:
        with capture_events() as logs:
            async with ResultReader(settings, keys, poll_interval_s=SLOW_POLL_S) as reader:
                waiting = asyncio.create_task(reader.wait("restart", timeout_s=5))
                async with Redis.from_url(first.url) as admin:
                    await eventually(subscribed(admin, [keys.done_channel("restart")]))
                await asyncio.to_thread(first.stop)

                async def reconnecting() -> bool:
                    return any(log["event"] == "results.wait_reconnect" for log in logs)

                await eventually(reconnecting)
                await asyncio.to_thread(second.start)
                async with ResultWriter(settings, keys, ttl_s=TTL_S) as writer:
                    await writer.write([(ok_record("restart"), Encoding.MSGPACK)])
                assert await asyncio.wait_for(waiting, 3) == ok_record("restart")
    finally:
        for server in (first, second):
            server.stop()
            server.cleanup()


async def test_a_notification_is_only_a_hint(
    writer: ResultWriter, reader: ResultReader, admin: Redis, keys: ResultKeys
) -> None:
    channel = keys.done_channel("hint")
    waiting = asyncio.create_task(reader.wait("hint", timeout_s=5))
    await eventually(subscribed(admin, [channel]))
    await admin.publish(channel, ok_record("hint", value=99.0).encode())  # no key behind it
    await writer.write([(ok_record("hint"), Encoding.MSGPACK)])
    assert await asyncio.wait_for(waiting, 2) == ok_record("hint")


async def test_a_result_without_notification_is_found_by_the_re_read(
    admin: Redis, keys: ResultKeys, settings: InferpoolSettings
) -> None:
    async with ResultReader(settings.redis, keys, poll_interval_s=0.05) as polling:
        waiting = asyncio.create_task(polling.wait("quiet", timeout_s=5))
        await eventually(subscribed(admin, [keys.done_channel("quiet")]))
        await admin.set(keys.result("quiet"), ok_record("quiet").encode())
        assert await asyncio.wait_for(waiting, 2) == ok_record("quiet")


# --- Redis unreachable ----------------------------------------------------------------------


async def test_unreachable_redis_is_result_store_unavailable(keys: ResultKeys) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    settings = RedisSettings(url=url, socket_timeout_s=1)
    async with ResultWriter(settings, keys, ttl_s=TTL_S) as writer:
        with pytest.raises(ResultStoreUnavailable) as info:
            await writer.write([(ok_record("u"), Encoding.MSGPACK)])
        with pytest.raises(ResultStoreUnavailable):
            await writer.mark_accepted(["u"])
    async with ResultReader(settings, keys) as reader:
        with pytest.raises(ResultStoreUnavailable):
            await reader.get("u")
        with pytest.raises(ResultStoreUnavailable, match=r"after waiting 0\.3s for 1 of 1"):
            await reader.wait("u", timeout_s=0.3)
    everything = "".join(traceback.format_exception(info.value))
    assert "s3cret" not in everything
    assert url not in everything


async def test_refused_credentials_are_a_configuration_error(
    redis_server: EmbeddedRedis, keys: ResultKeys
) -> None:
    url = f"redis://user:s3cret@127.0.0.1:{redis_server.port}/0"
    settings = RedisSettings(url=url)
    async with ResultWriter(settings, keys, ttl_s=TTL_S) as writer:
        with pytest.raises(ConfigurationError, match="refused our credentials") as info:
            await writer.write([(ok_record("a"), Encoding.MSGPACK)])
    async with ResultReader(settings, keys) as reader:
        with pytest.raises(ConfigurationError):
            await reader.get("a")
        with pytest.raises(ConfigurationError):
            await reader.wait("a", timeout_s=2)
    assert "s3cret" not in str(info.value)


# --- sync facade and CLI ----------------------------------------------------------------------


async def test_sync_reader_from_a_thread(
    writer: ResultWriter, settings: InferpoolSettings, keys: ResultKeys
) -> None:
    await writer.write([(ok_record("sync"), Encoding.MSGPACK)])

    def read() -> tuple[RequestState, ResultRecord]:
        with SyncResultReader(settings.redis, keys) as sync_reader:
            return sync_reader.get("nope").state, sync_reader.wait("sync", timeout_s=2)

    assert await asyncio.to_thread(read) == (RequestState.UNKNOWN, ok_record("sync"))


async def test_cli_prints_a_found_result(
    writer: ResultWriter, settings: InferpoolSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    await writer.write([(ok_record("c1"), Encoding.MSGPACK)])
    capsys.readouterr()
    args = argparse.Namespace(id="c1", wait=None)
    assert await asyncio.to_thread(cli.run, args, settings) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == ok_record("c1").to_json_ready()
    assert printed["outputs"]["y"]["$tensor"]["dtype"] == "float32"


async def test_cli_unknown_pending_and_timeout(
    writer: ResultWriter, settings: InferpoolSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(cli.run, argparse.Namespace(id="c2", wait=None), settings) == 2
    assert json.loads(capsys.readouterr().out) == {"id": "c2", "status": "unknown"}
    await writer.mark_accepted(["c2"])
    capsys.readouterr()
    assert await asyncio.to_thread(cli.run, argparse.Namespace(id="c2", wait=None), settings) == 2
    assert json.loads(capsys.readouterr().out) == {"id": "c2", "status": "pending"}
    assert await asyncio.to_thread(cli.run, argparse.Namespace(id="c2", wait=0.1), settings) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"id": "c2", "status": "pending"}
    assert "'c2'" in captured.err and "0.1s" in captured.err
