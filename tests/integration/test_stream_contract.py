"""The token-stream part of the ResultStore contract, for the in-memory and Redis stores:
appends, the restart entry of a new run, duplicates, cancel flags and following a stream."""

from __future__ import annotations

import asyncio

from inferpool.protocol import ResultKeys, ResultRecord, ResultStatus
from inferpool.protocol.generation import EntryType, FinishReason, StreamEntry
from inferpool.protocol.wire import Encoding
from inferpool.settings import InferpoolSettings
from results import RedisResultStore, ResultStore
from results.store import StreamAppend


def tokens(seq: int, text: str) -> StreamEntry:
    return StreamEntry(EntryType.TOKENS, seq, text, len(text))


async def test_entries_are_read_from_the_start_or_after_an_id(store: ResultStore) -> None:
    assert await store.append_streams([StreamAppend("g", (), opening=True, worker="w")]) == [False]
    await store.append_streams([StreamAppend("g", (tokens(0, "Hel"), tokens(1, "lo")))])
    items = await store.read_stream("g", "0", 0)
    assert [entry for _, entry in items] == [tokens(0, "Hel"), tokens(1, "lo")]
    assert [entry for _, entry in await store.read_stream("g", items[0][0], 0)] == [
        tokens(1, "lo")
    ]
    assert await store.read_stream("g", items[-1][0], 0.05) == []


async def test_a_new_run_opens_with_a_restart_entry(store: ResultStore) -> None:
    await store.append_streams([StreamAppend("g", (tokens(0, "a"),), opening=True, worker="w1")])
    await store.append_streams([StreamAppend("g", (tokens(0, "b"),), opening=True, worker="w2")])
    entries = [entry for _, entry in await store.read_stream("g", "0", 0)]
    assert [e.type for e in entries] == [EntryType.TOKENS, EntryType.RESTART, EntryType.TOKENS]
    assert entries[1].worker == "w2"


async def test_an_answered_request_takes_no_more_entries(store: ResultStore) -> None:
    record = ResultRecord(id="g", status=ResultStatus.OK, outputs={"text": "x"})
    await store.write([(record, Encoding.MSGPACK)])
    opening = StreamAppend("g", (tokens(0, "late"),), opening=True, worker="w")
    assert await store.append_streams([opening, StreamAppend("h", (), opening=True)]) == [
        True, False,
    ]
    assert await store.read_stream("g", "0", 0) == []


async def test_cancel_flags(store: ResultStore) -> None:
    await store.request_cancel("b")
    assert await store.cancel_requested(["a", "b"]) == [False, True]


async def test_stream_yields_the_deltas_then_the_result(store: ResultStore) -> None:
    record = ResultRecord(id="g", status=ResultStatus.OK, outputs={"text": "Hi!"})

    async def generate() -> None:
        await store.append_streams([StreamAppend("g", (tokens(0, "Hi"),), opening=True)])
        await store.append_streams([StreamAppend("g", (tokens(1, "!"),))])
        await store.write([(record, Encoding.MSGPACK)])
        end = StreamEntry(EntryType.END, 2, tokens=3, finish_reason=FinishReason.STOP)
        await store.append_streams([StreamAppend("g", (end,))])

    writer = asyncio.create_task(generate())
    items = [item async for item in store.stream("g", 10)]
    await writer
    assert items == [tokens(0, "Hi"), tokens(1, "!"), record]


async def test_stream_ends_with_the_result_when_no_end_entry_comes(store: ResultStore) -> None:
    record = ResultRecord(id="g", status=ResultStatus.OK, outputs={"text": "x"})
    await store.append_streams([StreamAppend("g", (tokens(0, "x"),), opening=True)])
    await store.write([(record, Encoding.MSGPACK)])  # its worker died before the end entry
    assert [item async for item in store.stream("g", 10)] == [tokens(0, "x"), record]


async def test_the_sync_reader_follows_a_stream(settings: InferpoolSettings) -> None:
    from results import SyncResultReader

    keys = ResultKeys(settings.result_key_prefix)
    record = ResultRecord(id="s", status=ResultStatus.OK, outputs={"text": "ok"})
    async with RedisResultStore(settings.redis, keys, ttl_s=60) as store:
        await store.append_streams([StreamAppend("s", (tokens(0, "ok"),), opening=True)])
        await store.write([(record, Encoding.MSGPACK)])

    def follow() -> list[object]:
        with SyncResultReader(settings.redis, keys) as reader:
            return list(reader.stream("s", 10))

    assert await asyncio.to_thread(follow) == [tokens(0, "ok"), record]
