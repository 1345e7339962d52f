"""ResultStore: where every request's one answer lives, whatever the backend.

The worker's side writes results (first write wins, with a TTL, waiters told), marks
requests as accepted (so a reader sees them as pending) and counts attempts (poison
detection). The client's side looks a request up, or waits for results as they are
written. ``RedisResultStore`` is the production backend; ``InMemoryResultStore`` has the
same semantics and serves unit tests of the worker's stages.
"""

from __future__ import annotations

import abc
import contextlib
import enum
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass

from inferpool.errors import ResultTimeout
from inferpool.lifecycle import Service
from inferpool.protocol import LoadSummary, ResultRecord
from inferpool.protocol.generation import StreamEntry
from inferpool.protocol.wire import Encoding

#: A load summary older than this is a worker that stopped reporting: it is ignored.
LOAD_MAX_AGE_MS = 5000
#: How many of the missing ids a timeout message names.
TIMEOUT_EXAMPLES = 5


class RequestState(enum.StrEnum):
    """Where a request stands: its result's status, or pending (a worker has it) / unknown."""

    OK = "ok"
    ERROR = "error"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    RATE_LIMITED = "rate_limited"
    PENDING = "pending"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the store knows about one request; ``record`` is set once there is a result."""

    state: RequestState
    record: ResultRecord | None


def lookup_of(record: ResultRecord | None, accepted: bool) -> Lookup:
    if record is not None:
        return Lookup(RequestState(record.status.value), record)
    return Lookup(RequestState.PENDING if accepted else RequestState.UNKNOWN, None)


def missing_ids(missing: Iterable[str]) -> str:
    """A few of the missing ids, for an error message."""
    ordered = sorted(missing)
    more = ", ..." if len(ordered) > TIMEOUT_EXAMPLES else ""
    return ", ".join(ordered[:TIMEOUT_EXAMPLES]) + more


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Entries to append to one request's token stream. ``opening``: the run's first
    append: if the stream already holds entries (an earlier run), a ``restart`` entry
    (naming ``worker``) goes first; if the request already has a result, nothing is
    appended."""

    request_id: str
    entries: tuple[StreamEntry, ...]
    opening: bool = False
    worker: str = ""


#: One entry read from a stream: its Redis entry id and the entry.
StreamItem = tuple[str, StreamEntry]


class ResultStore(Service, abc.ABC):
    """The interface; a backend implements the abstract methods (``wait`` comes free)."""

    # --- the worker's side -----------------------------------------------------------------

    async def check_access(self) -> None:
        """Prove at start that every command the worker will send is allowed: a refusal is
        a ConfigurationError naming what is missing (not a crash at the first result)."""

    @abc.abstractmethod
    async def write(
        self, results: Sequence[tuple[ResultRecord, Encoding]], settled: Sequence[str] = ()
    ) -> int:
        """Store each result unless its id has one already (the first write wins), with the
        TTL; tell its waiters; and forget the attempt counts of the ``settled`` records (a
        record's id for attempts is ``topic/partition/offset``). Returns how many results
        were new. Raises ResultStoreUnavailable when the backend cannot be reached or
        refuses for now: retrying is safe."""

    @abc.abstractmethod
    async def mark_accepted(
        self, request_ids: Sequence[str], released: Sequence[str] = ()
    ) -> None:
        """Record that a worker has taken these requests (readers see them as pending), and
        take one attempt off each ``released`` record (it got through admission)."""

    @abc.abstractmethod
    async def count_attempts(self, record_ids: Sequence[str], delta: int = 1) -> list[int]:
        """Add ``delta`` attempts at processing each record; each record's new count."""

    @abc.abstractmethod
    async def start_attempts(
        self, record_ids: Sequence[str], request_ids: Sequence[str]
    ) -> tuple[list[int], list[bool]]:
        """One attempt more at each record (its new count), and whether a client asked to
        cancel each request: ``count_attempts`` and ``cancel_requested`` at once."""

    @abc.abstractmethod
    async def append_streams(self, appends: Sequence[StreamAppend]) -> list[bool]:
        """Append each ``StreamAppend`` to its request's stream (the stream's TTL is the
        results'). Returns, per append, whether the request already had a result."""

    @abc.abstractmethod
    async def cancel_requested(self, request_ids: Sequence[str]) -> list[bool]:
        """Whether a client asked to cancel each request."""

    @abc.abstractmethod
    async def publish_load(self, model: str, summary: LoadSummary, ttl_s: float) -> None:
        """Write this worker's load summary of ``model`` (the hash expires after ``ttl_s``
        unless a worker writes again)."""

    # --- the client's side -----------------------------------------------------------------

    @abc.abstractmethod
    async def load(self, model: str, max_age_ms: int = LOAD_MAX_AGE_MS) -> list[LoadSummary]:
        """The load summaries of ``model`` written in the last ``max_age_ms``, one per
        worker (an unreadable one is skipped)."""

    @abc.abstractmethod
    async def request_cancel(self, request_id: str) -> None:
        """Cancel the request (its cancel key, with the results' TTL): a worker that has not
        started it answers ``cancelled``; a generation stops at its next step
        (``finish_reason: cancelled``); a request that has a result keeps it."""

    @abc.abstractmethod
    async def read_stream(
        self, request_id: str, after: str, timeout_s: float
    ) -> list[StreamItem]:
        """The stream's entries after entry id ``after`` (``"0"``: from the start), waiting
        up to ``timeout_s`` for one when there are none yet (then ``[]``)."""

    @abc.abstractmethod
    async def get(self, request_id: str) -> Lookup:
        """The request's result if it has one, else whether it is pending or unknown."""

    @abc.abstractmethod
    def wait_many(
        self, request_ids: Iterable[str], timeout_s: float
    ) -> AsyncGenerator[ResultRecord, None]:
        """Yield each result as it arrives (any order, each id once), then raise
        ResultTimeout if some did not arrive within ``timeout_s``. To stop early, wrap the
        call in ``contextlib.aclosing`` so that what it holds is released at once."""

    async def wait(self, request_id: str, timeout_s: float) -> ResultRecord:
        """The request's result, waiting up to ``timeout_s``; else ResultTimeout."""
        try:
            async with contextlib.aclosing(self.wait_many([request_id], timeout_s)) as records:
                async for record in records:
                    return record
        except ResultTimeout:
            pass
        raise ResultTimeout(
            f"no result for request {request_id!r} within {timeout_s:g}s; it may still be "
            "pending, or unknown (never submitted, or its result expired): look it up later "
            f"with 'inferpool result {request_id}'"
        )

    def stream(
        self, request_id: str, timeout_s: float, after: str = "0"
    ) -> AsyncGenerator[StreamEntry | ResultRecord, None]:
        """A generation as it is made: its stream's ``tokens`` and ``restart`` entries (from
        the start, or after entry id ``after``), then its result; ResultTimeout if the
        result does not arrive within ``timeout_s``."""
        from results.streaming import follow

        return follow(self, request_id, timeout_s, after)
