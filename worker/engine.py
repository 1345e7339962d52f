"""Engine: an execution mode. Admission hands each engine the admitted requests of its
models; the engine runs them and hands every outcome to settlement.

A request's life inside an engine: admitted (queued) -> started -> settled. An engine may
publish partial outputs while a request runs (a generative engine streams tokens); those
never settle it. Its one final answer does, through ``Settle``. Until then the request's
offset is held: it counts against admission's back-pressure (requests and bytes) and is
not committed, so a worker that dies mid-request leaves it to the partition's next owner.
The consumer keeps polling meanwhile (partitions paused when the worker is full), so a
request may run far longer than ``max_poll_interval_ms``.

What an engine must do on a rebalance: ``discard`` the queued (not yet started) requests
of the revoked partitions, and settle the started ones as usual; the worker waits for
those before it commits and gives the partitions up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from worker.request import Answer, PendingRequest


class Settle(Protocol):
    """What an engine needs from settlement: answer these records (returns once stored)."""

    async def settle(self, answers: Sequence[Answer]) -> None: ...


class Engine(Protocol):
    """One execution mode for some of the worker's models (``models``)."""

    @property
    def models(self) -> list[str]: ...

    async def warm_up(self) -> None:
        """Before the worker joins its group: every model sees its shapes once."""

    def admit(self, requests: Sequence[PendingRequest]) -> None:
        """Take admitted requests (of this engine's models); never blocks."""

    def discard(self, predicate: Callable[[PendingRequest], bool]) -> list[PendingRequest]:
        """Remove and return queued, not yet started, requests matching ``predicate``."""

    def queued(self) -> int:
        """Requests admitted and not yet started."""

    def oldest_submitted_ms(self) -> int | None:
        """The submit time of the oldest queued request (None when none is queued)."""

    async def idle(self) -> None:
        """Return once nothing is queued or running (a suspect is then run alone)."""

    async def run(self) -> None:
        """Run requests as they come, until ``drain()`` was called and all are settled."""

    def drain(self) -> None:
        """Finish what is admitted (whatever its batch would wait for), then end ``run``."""
