"""RequestConsumer: the worker's membership in the consumer group, and its fetches.

Auto-commit is off: the worker commits offsets itself once results are stored. Every call
that waits on the broker is bounded, so a frozen broker cannot hang a drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaConnectionError, KafkaError

from inferpool.backoff import Backoff
from inferpool.kafka_connect import start_client
from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from inferpool.settings import InferpoolSettings
from worker import kafka_batches
from worker.offsets import TopicPartition

log = get_logger("worker.consumer")

KAFKA_DEFAULT_PARTITION_FETCH_BYTES = 1_048_576
#: Room in a partition's fetch for a record's key, headers and batch framing.
RECORD_OVERHEAD_BYTES = 64 * 1024
FETCH_BACKOFF_FIRST_S = 0.1
FETCH_BACKOFF_MAX_S = 5.0
#: How soon aiokafka fetches the other partitions while one has records waiting unread.
PREFETCH_BACKOFF_S = 0.005

PartitionsCallback = Callable[[list[TopicPartition]], Awaitable[None]]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: PartitionsCallback, on_revoked: PartitionsCallback) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        await self._on_revoked([TopicPartition(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        await self._on_assigned([TopicPartition(tp.topic, tp.partition) for tp in assigned])


def _shorten_prefetch_backoff(consumer: AIOKafkaConsumer) -> None:
    """While records of one partition wait in the consumer unread, aiokafka sends the next
    fetch of the others only ``prefetch_backoff`` (0.1 s, not an option) after they came.
    Admission leaves a priority lane that holds its share out of its fetches (LaneGate), so
    its records wait, and an urgent request was fetched up to 0.1 s late: the urgent p99
    under a low backlog was 158 ms (``ops.bench.queue_semantics``); with
    PREFETCH_BACKOFF_S, 70-115 ms in five runs of six (one 708 ms), against 70-74 ms when
    lanes were paused instead. Only partitions with nothing waiting are fetched sooner, as
    long polls, so the broker's work does not grow (echo: 21 µs per request either way).
    """
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not isinstance(getattr(fetcher, "_prefetch_backoff", None), float):
        log.warning("consumer.prefetch_backoff_unchanged", reason="aiokafka internals moved")
        return
    fetcher._prefetch_backoff = PREFETCH_BACKOFF_S


def _never_leave_group(consumer: AIOKafkaConsumer) -> None:
    """Stop without LeaveGroup: the broker expires this member after its session timeout.

    aiokafka has no option for it; its coordinator sends LeaveGroup from
    ``_maybe_leave_group`` (on stop, and when max_poll_interval_ms passes idle), so that
    method is replaced on this consumer's coordinator by one that only forgets the
    membership locally. Should a later aiokafka lack it, the consumer leaves as usual.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "_maybe_leave_group"):
        log.warning("consumer.leave_group_kept", reason="aiokafka internals changed")
        return

    async def forget_membership() -> None:
        coordinator.generation = -1
        coordinator.member_id = ""

    coordinator._maybe_leave_group = forget_membership


class RequestConsumer(Service):
    """Started, it is connected; ``subscribe`` then joins the group (the rebalance callbacks
    are usually built from things that need this consumer, hence the two steps)."""

    def __init__(
        self,
        settings: InferpoolSettings,
        topics: list[str],
        on_fetch_error: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._on_fetch_error = on_fetch_error
        self._fetch_backoff = Backoff(FETCH_BACKOFF_FIRST_S, FETCH_BACKOFF_MAX_S)
        self._consumer: AIOKafkaConsumer | None = None
        self._timeout_s = settings.kafka.request_timeout_ms / 1000

    async def _start(self) -> None:
        settings = self._settings
        if not kafka_batches.install(settings.max_decompressed_batch_bytes):
            log.warning("consumer.batches_unguarded",
                        detail="an unreadable batch will stall its partition (logged)")
        consumer = AIOKafkaConsumer(
            group_id=settings.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            fetch_max_bytes=settings.fetch_max_bytes,
            # a record as large as a request may be must fit in one partition's fetch
            max_partition_fetch_bytes=max(
                KAFKA_DEFAULT_PARTITION_FETCH_BYTES,
                settings.max_request_bytes + RECORD_OVERHEAD_BYTES,
            ),
            **settings.kafka.client_options(),
        )
        await start_client(
            consumer.start, consumer.stop, settings.kafka, "could not start the request consumer"
        )
        if not settings.leave_group_on_stop:
            _never_leave_group(consumer)
        _shorten_prefetch_backoff(consumer)
        self._consumer = consumer

    def subscribe(self, on_assigned: PartitionsCallback, on_revoked: PartitionsCallback) -> None:
        """Join the group for the topics; the callbacks run at each rebalance."""
        self._client.subscribe(topics=self._topics, listener=_Listener(on_assigned, on_revoked))

    async def _stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            await asyncio.wait_for(consumer.stop(), self._timeout_s)
        except (TimeoutError, KafkaError) as error:
            log.warning("consumer.stop_failed", error=type(error).__name__)

    @property
    def _client(self) -> AIOKafkaConsumer:
        self._require_started()
        assert self._consumer is not None
        return self._consumer

    async def fetch(
        self, timeout_ms: int, max_records: int, partitions: Sequence[TopicPartition] | None = None
    ) -> list[Any]:
        """Records from every assigned, unpaused partition (or only from ``partitions``), in
        offset order per partition. The records prefetched for a partition left out stay
        where they are, for a later fetch.

        Never raises for what the broker sent: a fetch that fails (the broker away, or a
        batch aiokafka cannot read when the batch guard is not installed) is logged,
        counted, and retried after a back-off."""
        only = () if partitions is None else self._assigned(partitions)
        if partitions is not None and not only:  # revoked meanwhile; getmany() would read all
            await asyncio.sleep(timeout_ms / 1000)
            return []
        try:
            batches = await self._client.getmany(*only, timeout_ms=timeout_ms,
                                                 max_records=max_records)
        except KafkaConnectionError as error:
            log.warning("consumer.fetch_failed", error=type(error).__name__)
            return []
        except (KafkaError, ValueError, TypeError, OSError) as error:
            self._on_fetch_error(type(error).__name__)
            log.error("consumer.fetch_failed", error=f"{type(error).__name__}: {error}",
                      backoff_s=self._fetch_backoff.upcoming_s)
            await self._fetch_backoff.sleep()
            return []
        self._fetch_backoff.reset()
        return [record for records in batches.values() for record in records]

    def highwaters(self) -> dict[TopicPartition, int]:
        """The broker's end offset of each assigned partition, as of the last fetch."""
        if self._consumer is None:
            return {}
        marks: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            mark = self._consumer.highwater(tp)
            if mark is not None:
                marks[TopicPartition(tp.topic, tp.partition)] = mark
        return marks

    def pause_all(self) -> None:
        self._client.pause(*self._client.assignment())

    def _assigned(self, partitions: Sequence[TopicPartition]) -> list[Any]:
        wanted = set(partitions)
        return [tp for tp in self._client.assignment()
                if TopicPartition(tp.topic, tp.partition) in wanted]

    def resume_all(self) -> None:
        paused = self._client.paused()
        if paused:
            self._client.resume(*paused)

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit; False (logged) when the group moved on or the broker did not answer."""
        if not offsets:
            return True
        from aiokafka.structs import TopicPartition as KafkaTopicPartition

        payload = {
            KafkaTopicPartition(tp.topic, tp.partition): offset for tp, offset in offsets.items()
        }
        try:
            await asyncio.wait_for(self._client.commit(payload), self._timeout_s)
        except (TimeoutError, KafkaError) as error:
            log.warning("commit.failed", error=type(error).__name__, partitions=len(offsets))
            return False
        return True
