"""Admission: from the consumer's fetches to requests handed to their engine.

Each fetched chunk goes through: tracking (every record's offset and bytes, in the
tracker), intake (record -> request, or a rejection that says why), preparation
(tokenization, off the event loop), then to the engine that serves its model. Rejections
are settled in the background; accepted markers are written in the background too, so
neither the store nor the broker can stall the fetch loop (a consumer that misses
``max_poll_interval_ms`` leaves its group).

Back-pressure: once the records held (fetched, not yet answered) reach
``max_inflight_requests`` or ``max_inflight_bytes``, every partition is paused until a
quarter of both limits is free again; the consumer still polls now and then, so the group
keeps this member. Below that, a fetch leaves out the partitions of a priority lane that
holds its share (``LaneGate``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from inferpool.logs import get_logger
from inferpool.protocol import id_from_key, now_ms
from inferpool.protocol.wire import Encoding
from worker.admission.intake import Intake
from worker.admission.lane_gate import LaneGate
from worker.admission.preparation import Preparation
from worker.admission.rate_limits import TenantRateLimits
from worker.answers import Answers, poison_error
from worker.engine import Engine
from worker.offsets import OffsetToken, OffsetTracker, TopicPartition
from worker.request import Answer, KafkaRecord, PendingRequest, Rejection
from worker.result_sink import ResultSink

log = get_logger("worker.admission")

FETCH_TIMEOUT_MS = 100
GATED_FETCH_TIMEOUT_MS = 20
MAX_FETCH_RECORDS = 2000
BACKPRESSURE_POLL_S = 1.0
#: Counting a chunk's attempts may not hold the fetch loop longer than this (the store may
#: be down: the chunk is then admitted uncounted).
ATTEMPT_COUNT_TIMEOUT_S = 2.0


class RecordSource(Protocol):
    """What admission needs from the consumer (``RequestConsumer`` is the real one)."""

    async def fetch(
        self, timeout_ms: int, max_records: int, partitions: Sequence[TopicPartition] | None = None
    ) -> list[Any]: ...

    def pause_all(self) -> None: ...

    def resume_all(self) -> None: ...

    def highwaters(self) -> dict[TopicPartition, int]: ...


class SettleSoon(Protocol):
    """What admission needs from settlement: answer these records, in the background."""

    def settle_soon(self, answers: Sequence[Answer]) -> None: ...


class Admission:
    def __init__(
        self,
        consumer: RecordSource,
        tracker: OffsetTracker,
        intake: Intake,
        preparation: Preparation,
        engines: Mapping[str, Engine],
        settlement: SettleSoon,
        sink: ResultSink,
        answers: Answers,
        preparing: Counter[TopicPartition],
        max_inflight_requests: int,
        max_inflight_bytes: int,
        max_attempts: int,
        lane_gate: LaneGate | None = None,
        rate_limits: TenantRateLimits | None = None,
    ) -> None:
        self._consumer = consumer
        self._lane_gate = lane_gate
        self._rate_limits = rate_limits
        self._tracker = tracker
        self._intake = intake
        self._preparation = preparation
        self._engines = engines  # by model name
        self._settlement = settlement
        self._sink = sink
        self._answers = answers
        self._max_requests = max_inflight_requests
        self._max_bytes = max_inflight_bytes
        self._max_attempts = max_attempts
        self._preparing = preparing  # records in preparation, by partition (rebalances read it)
        self._marking: set[asyncio.Task[None]] = set()
        self._fetch: asyncio.Future[list[Any]] | None = None  # the fetch under way, if any
        self.fetching = True

    def stop_fetching(self) -> None:
        """No fetch after this one; a fetch under way is cut short (it may wait for as long
        as the group takes to rebalance: a drain must not wait for that)."""
        self.fetching = False
        if self._fetch is not None:
            self._fetch.cancel()

    async def _fetched(
        self, timeout_ms: int, max_records: int,
        partitions: Sequence[TopicPartition] | None = None,
    ) -> list[Any]:
        """``consumer.fetch``, or nothing if ``stop_fetching`` cut it short. (A record the
        consumer had handed out is never lost that way: its offset is not committed.)"""
        fetch = self._fetch = asyncio.ensure_future(
            self._consumer.fetch(timeout_ms, max_records, partitions))
        try:
            return await fetch
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.fetching or (task is not None and task.cancelling()):
                raise
            return []
        finally:
            self._fetch = None

    def _full(self) -> bool:
        return (
            self._tracker.unanswered() >= self._max_requests
            or self._tracker.held_bytes() >= self._max_bytes
        )

    def _resumable(self) -> bool:
        """Fetching paused at a limit resumes only once a quarter of it is free again:
        aiokafka drops a paused partition's prefetched records and the broker reads them
        again, so resuming at the first free slot paused it after every batch."""
        return (
            self._tracker.unanswered() <= self._max_requests - max(1, self._max_requests // 4)
            and self._tracker.held_bytes() <= self._max_bytes - max(1, self._max_bytes // 4)
        )

    def _open_partitions(self) -> list[TopicPartition] | None:
        return None if self._lane_gate is None else self._lane_gate.open_partitions()

    def _may_resume(self) -> bool:
        return self._resumable() and self._open_partitions() != []

    async def run(self) -> None:
        """Fetch and admit until ``stop_fetching``."""
        paused = False
        while self.fetching:
            partitions = self._open_partitions()
            # paused: at a limit, or every lane assigned here holds its share
            if self._full() or partitions == [] or (paused and not self._resumable()):
                if not paused:
                    self._consumer.pause_all()
                    paused = True
                await self._tracker.wait_until(self._may_resume, BACKPRESSURE_POLL_S)
                if not self._may_resume():
                    await self._fetched(0, 1)  # a poll: the group keeps this member
                continue
            if paused:
                self._consumer.resume_all()
                paused = False
            # a closed lane is read again as soon as it has room: fetch more often meanwhile
            timeout_ms = FETCH_TIMEOUT_MS if partitions is None else GATED_FETCH_TIMEOUT_MS
            room = max(1, self._max_requests - self._tracker.unanswered())
            records = await self._fetched(timeout_ms, min(room, MAX_FETCH_RECORDS), partitions)
            if records:
                await self.admit(records)
        await asyncio.gather(*self._marking, return_exceptions=True)

    async def admit(self, records: Sequence[KafkaRecord]) -> None:
        """Track, count, read, prepare and hand over one fetched chunk.

        Every record's attempts are counted before anything can crash on it (decode,
        validate, prepare, cost) and released once it is handed over, so a record that kills
        its worker while being admitted is caught like one that kills it while running. A
        record seen before (a suspect) is not blamed for its neighbours: its chunk count is
        taken back, and once the others are done it goes through the whole worker alone —
        counted, read, prepared, run and settled with nothing else in any stage — so a crash
        then is its own; past ``max_attempts`` it is refused unread, as poison."""
        now = (time.monotonic(), now_ms())
        tokens = [
            self._tracker.track(TopicPartition(r.topic, r.partition), r.offset, len(r.value or b""))
            for r in records
        ]
        counts = await self._sink.count_attempts_now(
            [token.record_id for token in tokens], ATTEMPT_COUNT_TIMEOUT_S
        )
        if counts is None:  # the store did not answer: admitted uncounted
            await self._admit_group(list(zip(records, tokens, strict=True)), now, counted=False)
            return
        first = [(r, t) for r, t, count in zip(records, tokens, counts, strict=True) if count <= 1]
        suspects = [(r, t) for r, t, count in zip(records, tokens, counts, strict=True)
                    if count > 1]
        if suspects:
            await self._sink.accept_now([], [t.record_id for _, t in suspects],
                                        ATTEMPT_COUNT_TIMEOUT_S)
        await self._admit_group(first, now, counted=True)
        for record, token in suspects:  # alone: if it kills this worker, nothing else is blamed
            await self._quiet()
            count = await self._sink.count_attempts_now([token.record_id],
                                                        ATTEMPT_COUNT_TIMEOUT_S)
            if count is not None and count[0] > self._max_attempts:
                poison = self._poison(record, token, count[0] - 1)
                self._settlement.settle_soon([self._answers.settles_rejected(poison)])
                continue
            await self._admit_group([(record, token)], now, counted=count is not None)
            await self._quiet()  # ... until it is settled: it ran with nothing beside it

    async def _quiet(self) -> None:
        """Until no engine has anything queued or running."""
        for engine in dict.fromkeys(self._engines.values()):
            await engine.idle()

    async def _admit_group(
        self,
        group: list[tuple[KafkaRecord, OffsetToken]],
        now: tuple[float, int],
        counted: bool,
    ) -> None:
        """Intake, preparation and hand-over of ``group``. Its attempts are released before
        anything of it can start in an engine (which counts its own attempt at running), so
        a crash later never blames a record twice."""
        rejections: list[Rejection] = []
        admitted: list[PendingRequest] = []
        for record, token in group:
            outcome = self._intake.admit(record, token, *now)
            if isinstance(outcome, Rejection):
                rejections.append(outcome)
            else:
                admitted.append(outcome)
        admitted = self._within_rate_limits(admitted, now[0])
        ready: list[PendingRequest] = []
        if admitted:
            ready, unprepared = await self._prepared(admitted)
            rejections += unprepared
        self._settlement.settle_soon([self._answers.settles_rejected(r) for r in rejections])
        if not ready:
            return
        if counted:  # markers and releases in one round trip, before anything can start
            await self._sink.accept_now([r.id for r in ready], [r.token.record_id for r in ready],
                                        ATTEMPT_COUNT_TIMEOUT_S)
        else:  # the store did not answer: markers are best effort, off the fetch loop
            task = asyncio.create_task(self._sink.mark_accepted([r.id for r in ready]))
            self._marking.add(task)
            task.add_done_callback(self._marking.discard)
        self._hand_over(ready)

    def _within_rate_limits(
        self, requests: list[PendingRequest], now: float
    ) -> list[PendingRequest]:
        """The requests within their tenants' rate limits; the others are answered
        ``rate_limited`` now (in the background), unprepared."""
        limits = self._rate_limits
        if not limits:
            return requests
        allowed: list[PendingRequest] = []
        limited: list[Answer] = []
        for request in requests:
            if limits.allow(request.envelope.tenant, now):
                allowed.append(request)
            else:
                limit = limits.limit_of(request.envelope.tenant) or 0.0
                limited.append(self._answers.settles_rate_limited(request, limit))
        if limited:
            log.info("request.rate_limited", count=len(limited))
            self._settlement.settle_soon(limited)
        return allowed

    def _poison(self, record: KafkaRecord, token: OffsetToken, attempts: int) -> Rejection:
        log.warning("request.poison", partition=record.partition, offset=record.offset,
                    attempts=attempts, stage="admission")
        return Rejection(record, token, id_from_key(record.key),
                         poison_error(attempts, self._max_attempts), Encoding.MSGPACK)

    async def _prepared(
        self, requests: list[PendingRequest]
    ) -> tuple[list[PendingRequest], list[Rejection]]:
        held = Counter(request.token.partition for request in requests)
        self._preparing.update(held)
        try:
            return await self._preparation.prepare(requests)
        finally:
            self._preparing.subtract(held)

    def _hand_over(self, requests: list[PendingRequest]) -> None:
        """Each request to its engine, unless its partition was revoked meanwhile: then the
        partition's next owner runs it, and this worker lets it go."""
        by_engine: dict[int, tuple[Engine, list[PendingRequest]]] = {}
        for request in requests:
            if not self._tracker.is_current(request.token):
                self._tracker.abandon(request.token)
                continue
            engine = self._engines[request.model]
            by_engine.setdefault(id(engine), (engine, []))[1].append(request)
        for engine, group in by_engine.values():
            engine.admit(group)

    def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition: the broker's end offset less the first offset not yet
        answered here."""
        lag: dict[tuple[str, int], int] = {}
        for partition, end in self._consumer.highwaters().items():
            position = self._tracker.position(partition)
            if position is not None:
                lag[(partition.topic, partition.partition)] = max(0, end - position)
        return lag

    def backlog(self) -> dict[tuple[str, int], int]:
        """Per assigned partition: requests published and not yet answered here (held ones
        and those not fetched yet; the load summaries' backlog)."""
        found: dict[tuple[str, int], int] = {}
        for partition, end in self._consumer.highwaters().items():
            count = self._tracker.backlog(partition, end)
            if count is not None:
                found[(partition.topic, partition.partition)] = count
        return found
