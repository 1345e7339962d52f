"""DeadLetterSink: a copy of every rejected record, with the reason, on the dead-letter topic.

Best effort, and never in the way of answering: settlement stores a record's result and
answers its offset first, then hands the copy here. ``submit`` only queues it; a sender
task publishes the queue with a bounded number of tries. A copy whose value is too large
for the dead-letter topic is sent truncated (headers say so, with the original size). A
dead-letter topic that is missing, refused or down costs copies, never answers or commits:
each lost copy is logged with its partition and offset and counted
(``inferpool_dead_letter_failures_total``, with an alert rule). The queue is bounded in
bytes; past the bound, new copies are dropped and counted the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from inferpool.backoff import Backoff
from inferpool.kafka_connect import start_client
from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from inferpool.protocol.headers import (
    ERROR_CODE_HEADER,
    ERROR_MESSAGE_HEADER,
    NULL_VALUE_HEADER,
    ORIGINAL_SIZE_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    TRUNCATED_HEADER,
)
from inferpool.settings import KafkaSettings
from worker.request import Rejection

log = get_logger("worker.dead_letter")

#: The most of a record's value a copy carries: under Kafka's default 1 MB message limit,
#: with room for the headers.
MAX_COPY_VALUE_BYTES = 900_000
MAX_QUEUED_BYTES = 64 * 1024 * 1024
MAX_TRIES = 4
SEND_CHUNK = 256
STOP_FLUSH_S = 5.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One copy as it is published."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    source: str  # "topic/partition@offset", for logs

    @property
    def size(self) -> int:
        return len(self.value or b"") + sum(len(k) + len(v) for k, v in self.headers)


def dead_letter_of(rejection: Rejection, max_value_bytes: int = MAX_COPY_VALUE_BYTES) -> DeadLetter:
    record = rejection.record
    value = record.value
    headers = [(key, bytes(v) if v is not None else b"") for key, v in (record.headers or ())]
    if value is None and record.key is None:  # Kafka needs one of them
        headers.append((NULL_VALUE_HEADER, b"true"))
        value = b""
    elif value is not None and len(value) > max_value_bytes:
        headers += [(TRUNCATED_HEADER, b"true"), (ORIGINAL_SIZE_HEADER, str(len(value)).encode())]
        value = bytes(value[:max_value_bytes])
    headers += [
        (ERROR_CODE_HEADER, rejection.error.code.encode()),
        (ERROR_MESSAGE_HEADER, str(rejection.error).encode()[:1024]),
        (SOURCE_TOPIC_HEADER, record.topic.encode()),
        (SOURCE_PARTITION_HEADER, str(record.partition).encode()),
        (SOURCE_OFFSET_HEADER, str(record.offset).encode()),
    ]
    return DeadLetter(record.key, value, headers,
                      f"{record.topic}/{record.partition}@{record.offset}")


def _may_pass(error: BaseException) -> bool:
    """Whether trying again can help: a broker that did not answer may; a refusal (too
    large, not authorised) or a local error does not."""
    if isinstance(error, TimeoutError):
        return True
    return isinstance(error, KafkaError) and bool(error.retriable)


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    return dead_letter_of(rejection).headers


class DeadLetterSink(Service):
    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        on_retry: Callable[[], None] = lambda: None,
        on_failure: Callable[[str, int], None] = lambda reason, count: None,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        max_tries: int = MAX_TRIES,
        timeout_s: float | None = None,
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._on_retry = on_retry
        self._on_failure = on_failure
        self._max_queued_bytes = max_queued_bytes
        self._max_tries = max_tries
        self._timeout_s = timeout_s if timeout_s is not None else kafka.request_timeout_ms / 1000
        self._producer: AIOKafkaProducer | None = None
        self._queue: deque[DeadLetter] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing is queued or being sent
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        producer = AIOKafkaProducer(
            acks="all", enable_idempotence=False, linger_ms=2, **self._kafka.client_options()
        )
        await start_client(
            producer.start, producer.stop, self._kafka, "could not start the dead-letter producer"
        )
        self._producer = producer
        self._sender = asyncio.create_task(self._send_forever(), name="inferpool-dead-letters")

    async def _stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flushed(), STOP_FLUSH_S)
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        self._fail(list(self._queue), "the worker stopped before the copy was sent")
        self._queue.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(TimeoutError, KafkaError):
                await asyncio.wait_for(producer.stop(), self._kafka.request_timeout_ms / 1000)

    def pending(self) -> int:
        return len(self._queue)

    def submit(self, rejections: Sequence[Rejection]) -> None:
        """Queue a copy of each record; never waits, never raises."""
        dropped: list[DeadLetter] = []
        for rejection in rejections:
            letter = dead_letter_of(rejection)
            if self._queued_bytes + letter.size > self._max_queued_bytes:
                dropped.append(letter)
                continue
            self._queue.append(letter)
            self._queued_bytes += letter.size
        if dropped:
            self._fail(dropped, "the dead-letter queue is full (the topic is not keeping up)")
        if self._queue:
            self._idle.clear()
            self._wake.set()

    async def flushed(self) -> None:
        """Wait until every queued copy was sent or given up."""
        if self._queue or self._wake.is_set():
            await self._idle.wait()

    async def _send_forever(self) -> None:
        while True:
            await self._wake.wait()
            while self._queue:
                chunk = [self._queue.popleft() for _ in range(min(SEND_CHUNK, len(self._queue)))]
                self._queued_bytes -= sum(letter.size for letter in chunk)
                await self._send_chunk(chunk)
            self._wake.clear()
            self._idle.set()

    async def _send_chunk(self, chunk: list[DeadLetter]) -> None:
        """Send every copy; those that fail for a reason that may pass are tried again (up
        to ``max_tries`` in all), the others are given up at once. One bad copy never costs
        its neighbours."""
        backoff = Backoff(0.1, 2.0)
        for attempt in range(1, self._max_tries + 1):
            outcomes = await asyncio.gather(*(self._publish(letter) for letter in chunk),
                                            return_exceptions=True)
            failed = [(letter, error) for letter, error in zip(chunk, outcomes, strict=True)
                      if isinstance(error, BaseException)]
            again = [(letter, error) for letter, error in failed
                     if attempt < self._max_tries and _may_pass(error)]
            for letter, error in failed:
                if (letter, error) not in again:
                    self._fail([letter], f"{type(error).__name__}: {error}")
            if not again:
                return
            chunk = [letter for letter, _ in again]
            self._on_retry()
            log.warning("dead_letter.retry", error=repr(again[0][1]), attempt=attempt,
                        copies=len(chunk), backoff_s=backoff.upcoming_s)
            await backoff.sleep()

    async def _publish(self, letter: DeadLetter) -> None:
        producer = self._producer
        assert producer is not None
        timeout_s = self._timeout_s
        delivery = await asyncio.wait_for(
            producer.send(self._topic, value=letter.value, key=letter.key,
                          headers=letter.headers),
            timeout_s,
        )
        await asyncio.wait_for(delivery, timeout_s)

    def _fail(self, letters: list[DeadLetter], reason: str) -> None:
        if not letters:
            return
        self._on_failure(reason.split(":")[0], len(letters))
        log.error("dead_letter.lost", topic=self._topic, copies=len(letters), reason=reason,
                  records=[letter.source for letter in letters[:20]])
