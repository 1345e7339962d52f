"""RequestConsumer.fetch against the embedded broker: a fetch of some partitions leaves the
others' prefetched records where they are (LaneGate relies on it), and aiokafka's prefetch
back-off is the short one (urgent lanes are fetched while another lane's records wait)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from inferpool.settings import InferpoolSettings
from inferpool.topics import ensure_topics
from worker.consumer import PREFETCH_BACKOFF_S, RequestConsumer
from worker.offsets import TopicPartition


async def test_a_fetch_of_some_partitions_keeps_the_others_records(
    settings: InferpoolSettings,
) -> None:
    topic = settings.request_topic
    await ensure_topics(settings.kafka, [topic], 2, 1)
    producer = AIOKafkaProducer(**settings.kafka.client_options())
    await producer.start()
    try:
        for partition in (0, 1):
            for n in range(5):
                await producer.send_and_wait(topic, f"{partition}-{n}".encode(),
                                             key=f"k{partition}{n}".encode(), partition=partition)
    finally:
        await producer.stop()
    held = asyncio.Event()

    async def assigned(partitions: list[TopicPartition]) -> None:
        if partitions:
            held.set()

    async def revoked(partitions: list[TopicPartition]) -> None:
        held.clear()

    async with RequestConsumer(settings, [topic]) as consumer:
        consumer.subscribe(assigned, revoked)
        first = TopicPartition(topic, 0)
        got: list[bytes] = []
        async with asyncio.timeout(30):
            while not held.is_set() or len(got) < 5:
                got += [r.value for r in await consumer.fetch(200, 100, [first])]
            assert sorted(got) == [f"0-{n}".encode() for n in range(5)]
            rest: list[bytes] = []
            while len(rest) < 5:
                rest += [r.value for r in await consumer.fetch(200, 100)]
        assert sorted(rest) == [f"1-{n}".encode() for n in range(5)]  # nothing lost or twice
        assert consumer._client._fetcher._prefetch_backoff == PREFETCH_BACKOFF_S
        assert await consumer.fetch(0, 10, []) == []  # no partition: nothing, not everything
