"""DeadLetterSink: a copy of every rejected record, with the reason, on the dead-letter topic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from inferpool.errors import BrokerUnavailable
from inferpool.kafka_connect import start_client
from inferpool.lifecycle import Service
from inferpool.protocol.headers import (
    ERROR_CODE_HEADER,
    ERROR_MESSAGE_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from inferpool.settings import KafkaSettings
from worker.request import Rejection


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    record = rejection.record
    original = [(key, bytes(value)) for key, value in (record.headers or ())]
    return [
        *original,
        (ERROR_CODE_HEADER, rejection.error.code.encode()),
        (ERROR_MESSAGE_HEADER, str(rejection.error).encode()[:1024]),
        (SOURCE_TOPIC_HEADER, record.topic.encode()),
        (SOURCE_PARTITION_HEADER, str(record.partition).encode()),
        (SOURCE_OFFSET_HEADER, str(record.offset).encode()),
    ]


class DeadLetterSink(Service):
    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self._producer: AIOKafkaProducer | None = None

    async def _start(self) -> None:
        producer = AIOKafkaProducer(
            acks="all", enable_idempotence=False, linger_ms=2, **self._kafka.client_options()
        )
        await start_client(
            producer.start, producer.stop, self._kafka, "could not start the dead-letter producer"
        )
        self._producer = producer

    async def _stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(TimeoutError, KafkaError):
                await asyncio.wait_for(producer.stop(), self._kafka.request_timeout_ms / 1000)

    async def send(self, rejections: Sequence[Rejection]) -> None:
        """Send every copy and wait for the broker's acknowledgements."""
        self._require_started()
        assert self._producer is not None
        try:
            deliveries = [
                await self._producer.send(
                    self._topic,
                    value=rejection.record.value,
                    key=rejection.record.key,
                    headers=dead_letter_headers(rejection),
                )
                for rejection in rejections
            ]
            await asyncio.wait_for(
                asyncio.gather(*deliveries), self._kafka.request_timeout_ms / 1000
            )
        except (TimeoutError, KafkaError) as error:
            raise BrokerUnavailable(
                f"dead-letter topic {self._topic!r} did not acknowledge ({type(error).__name__})"
            ) from None
