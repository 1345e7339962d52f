"""Printing a generation as it streams: the text to stdout as it arrives, a restart as a
marked new line, then the finish reason and timings (to stderr)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import TextIO

from inferpool.protocol import ResultRecord
from inferpool.protocol.generation import EntryType, StreamEntry


def summary(record: ResultRecord) -> str:
    outputs = record.outputs if isinstance(record.outputs, dict) else {}
    if not record.ok or "finish_reason" not in outputs:
        error = record.error.code if record.error else record.status.value
        return f"[{record.status.value}: {error}]"
    ttft = outputs.get("time_to_first_token_ms")
    return (
        f"[{outputs['finish_reason']}: {outputs['completion_tokens']} tokens, first after "
        f"{ttft or 0:.0f} ms, {outputs['tokens_per_s']:.1f} tokens/s, worker {record.worker}]"
    )


async def print_stream(
    items: AsyncIterator[StreamEntry | ResultRecord],
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> ResultRecord:
    """Print the stream's text until the result; returns the result."""
    async for item in items:
        if isinstance(item, ResultRecord):
            out.write("\n")
            out.flush()
            print(summary(item), file=err)
            return item
        if item.type is EntryType.RESTART:
            out.write(f"\n[restarted on {item.worker}]\n")
        else:
            out.write(item.text)
        out.flush()
    raise AssertionError("a stream always ends with its result")  # pragma: no cover
