"""PendingRequest: one admitted request on its way through the worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from inferpool.protocol import RequestEnvelope
from inferpool.protocol.wire import Encoding
from worker.offsets import OffsetToken


class KafkaRecord(Protocol):
    """The fields of aiokafka's ConsumerRecord that the worker reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


@dataclass(frozen=True, slots=True)
class PendingRequest:
    envelope: RequestEnvelope
    item: Any  # what the model's validate() returned
    token: OffsetToken
    encoding: Encoding  # the result is stored in the request's encoding
    fetched_monotonic: float
    fetched_ms: int
    deadline_monotonic: float | None  # the envelope's deadline on this host's monotonic clock
    traceparent: str | None = None
    cost: int = 1  # what the request weighs in a batch: its token count, for text models
    record: KafkaRecord | None = None  # the Kafka record it came in (for a dead-letter copy)

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def model(self) -> str:
        return self.envelope.model

    def expired(self, now_monotonic: float) -> bool:
        return self.deadline_monotonic is not None and now_monotonic >= self.deadline_monotonic
