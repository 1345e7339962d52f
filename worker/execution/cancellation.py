"""CancelScreen: requests a client cancelled before they started are answered ``cancelled``
and never run.

Right before a batch runs, the cancel keys of its requests are read (one round trip per
batch, ``ResultStore.cancel_requested``). Best effort: while the store is unavailable,
nothing counts as cancelled, and the request runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from inferpool.logs import get_logger
from worker.request import PendingRequest

log = get_logger("worker.cancellation")


class CancelFlags(Protocol):
    """Where cancel keys are read (``ResultSink``, best effort)."""

    async def cancel_requested(self, request_ids: Sequence[str]) -> list[bool]: ...


class CancelScreen:
    def __init__(self, flags: CancelFlags) -> None:
        self._flags = flags

    async def split(
        self, requests: list[PendingRequest]
    ) -> tuple[list[PendingRequest], list[PendingRequest]]:
        """(the requests to run, the cancelled ones), each in its order."""
        if not requests:
            return [], []
        flags = await self._flags.cancel_requested([r.id for r in requests])
        cancelled = [r for r, flag in zip(requests, flags, strict=True) if flag]
        if not cancelled:
            return requests, []
        log.info("request.cancelled", request_ids=[r.id for r in cancelled])
        return [r for r, flag in zip(requests, flags, strict=True) if not flag], cancelled
