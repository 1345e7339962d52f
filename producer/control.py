"""RequestControl: what the producer needs from the result store for ``cancel`` and for
admission at submit. The producer does not import the store (``results``): the caller
passes one in, e.g. ``results.reader.ResultReader``, which has both methods."""

from __future__ import annotations

from typing import Protocol

from inferpool.protocol import LoadSummary


class RequestControl(Protocol):
    async def request_cancel(self, request_id: str) -> None:
        """Set the request's cancel key (docs/protocol.md, "Cancellation")."""

    async def load(self, model: str) -> list[LoadSummary]:
        """The fresh load summaries of ``model``, one per worker serving it."""
