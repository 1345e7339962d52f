"""A worker's consumer leaves its group on stop, unless told not to (the embedded Tansu
stack: see TANSU_CLIENT_SETTINGS); either way the group keeps working."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient

from inferpool.settings import InferpoolSettings
from inferpool.topics import ensure_topics
from worker.consumer import RequestConsumer
from worker.offsets import TopicPartition


class Member:
    """A RequestConsumer that records when it holds partitions."""

    def __init__(self, settings: InferpoolSettings) -> None:
        self.holds = asyncio.Event()
        self.consumer = RequestConsumer(settings, [settings.request_topic])

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.subscribe(self._assigned, self._revoked)

    async def _assigned(self, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.holds.set()

    async def _revoked(self, partitions: list[TopicPartition]) -> None:
        self.holds.clear()

    async def until_holding(self) -> None:
        async with asyncio.timeout(30):
            while not self.holds.is_set():
                await self.consumer.fetch(50, 10)


async def group_size(settings: InferpoolSettings) -> int:
    admin = AIOKafkaAdminClient(**settings.kafka.client_options())
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([settings.consumer_group])
        (group,) = response.groups
        return len(group[5])  # (error, id, state, protocol type, protocol, members, ...)
    finally:
        await admin.close()


async def test_a_stop_without_leave_group_leaves_the_member_to_expire(
    settings: InferpoolSettings,
) -> None:
    await ensure_topics(settings.kafka, [settings.request_topic], 2, 1)
    staying = Member(settings.model_copy(update={"leave_group_on_stop": False}))
    leaving = Member(settings)
    await staying.start()
    await staying.until_holding()
    await leaving.start()
    # the join of the second member is a rebalance: both hold partitions afterwards, in a
    # generation > 0 (aiokafka sends no LeaveGroup in generation 0)
    await asyncio.gather(staying.until_holding(), leaving.until_holding())
    assert await group_size(settings) == 2

    await staying.consumer.stop()
    assert await group_size(settings) == 2, "no LeaveGroup: the broker still lists it"
    await leaving.consumer.stop()
    assert await group_size(settings) == 1, "LeaveGroup sent: gone at once"
