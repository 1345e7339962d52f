"""Helpers shared by the worker's integration tests (real broker, real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from inferpool.settings import InferpoolSettings
from results.keys import ResultKeys
from results.reader import ResultReader
from results.record import ResultRecord
from worker.models.base import Model
from worker.models.registry import ModelRegistry
from worker.pool import Worker


@contextlib.asynccontextmanager
async def running_worker(
    settings: InferpoolSettings, *models: Model, join_timeout_s: float = 20.0
) -> AsyncIterator[Worker]:
    """A started worker that has joined its group and holds partitions."""
    registry = ModelRegistry(models) if models else None
    async with Worker(settings, registry) as worker:
        await asyncio.wait_for(worker.assigned.wait(), join_timeout_s)
        yield worker


def reader_for(settings: InferpoolSettings) -> ResultReader:
    return ResultReader(settings.redis, ResultKeys(settings.result_key_prefix),
                        poll_interval_s=0.2)


async def collect(
    settings: InferpoolSettings, ids: Iterable[str], timeout_s: float = 30.0
) -> dict[str, ResultRecord]:
    """Every result, by id; fails the test (ResultTimeout) if one is missing."""
    found: dict[str, ResultRecord] = {}
    async with reader_for(settings) as reader:
        async for record in reader.wait_many(list(ids), timeout_s):
            assert record.id not in found, f"{record.id} yielded twice"
            found[record.id] = record
    return found


async def read_topic(settings: InferpoolSettings, topic: str, count: int,
                     timeout_s: float = 20.0) -> list[Any]:
    """The first ``count`` records of ``topic``."""
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None, **settings.kafka.client_options())
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                records += [r for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()
    return records


async def committed_total(settings: InferpoolSettings) -> int:
    """Sum of the group's committed offsets over every partition of the request topic
    (read with a consumer of the group that never joins it)."""
    consumer = AIOKafkaConsumer(group_id=settings.consumer_group, enable_auto_commit=False,
                                **settings.kafka.client_options())
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.request_topic) or set()
        total = 0
        for partition in partitions:
            offset = await consumer.committed(TopicPartition(settings.request_topic, partition))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def wait_until_committed(settings: InferpoolSettings, total: int,
                               timeout_s: float = 20.0) -> None:
    """Wait (polling the broker) until the group has committed ``total`` records."""
    async with asyncio.timeout(timeout_s):
        while await committed_total(settings) < total:
            await asyncio.sleep(0.1)
