"""Following a generation's stream until its result: what ``ResultStore.stream`` yields.

Reads block briefly (``READ_WAIT_S``); between reads with nothing new the result key is
looked at, so a stream whose final entry never came (its worker died after storing the
result) still ends with the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from inferpool.errors import ResultTimeout
from inferpool.protocol import ResultRecord
from inferpool.protocol.generation import EntryType, StreamEntry

if TYPE_CHECKING:
    from results.store import ResultStore

READ_WAIT_S = 0.5


async def follow(
    store: ResultStore, request_id: str, timeout_s: float, after: str
) -> AsyncGenerator[StreamEntry | ResultRecord, None]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (remaining := deadline - loop.time()) > 0:
        items = await store.read_stream(request_id, after, min(READ_WAIT_S, remaining))
        for entry_id, entry in items:
            after = entry_id
            if entry.type is EntryType.END:
                yield await store.wait(request_id, max(deadline - loop.time(), 1.0))
                return
            yield entry
        if items:
            continue
        lookup = await store.get(request_id)
        if lookup.record is not None:
            for _, entry in await store.read_stream(request_id, after, 0):
                if entry.type is EntryType.END:
                    break
                yield entry
            yield lookup.record
            return
    raise ResultTimeout(
        f"no result for request {request_id!r} within {timeout_s:g}s; it may still be "
        f"running: follow it again with 'inferpool result {request_id}'"
    )
