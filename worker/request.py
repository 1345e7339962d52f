"""What flows between the worker's stages: a fetched record, an admitted request, a record
that cannot be served, and the answer that settles a record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from inferpool.errors import RequestError
from inferpool.protocol import RequestEnvelope, ResultRecord
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
    """An admitted request, from admission until it is settled."""

    envelope: RequestEnvelope
    item: Any  # what the model's validate() (then prepare()) returned
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


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be served: it gets an error result (when its id is known) and a
    dead-letter copy."""

    record: KafkaRecord
    token: OffsetToken
    request_id: str | None
    error: RequestError
    encoding: Encoding
    model: str | None = None
    traceparent: str | None = None

    @classmethod
    def of(cls, request: PendingRequest, error: RequestError) -> Rejection:
        """A request already admitted that turns out bad (at preparation, as poison)."""
        assert request.record is not None
        return cls(
            request.record,
            request.token,
            request.id,
            error,
            request.encoding,
            request.model,
            request.traceparent,
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """How one fetched record is settled: the result stored under its id (None when no id
    is known), and the rejection to copy to the dead-letter topic (if any)."""

    token: OffsetToken
    result: ResultRecord | None
    encoding: Encoding
    rejection: Rejection | None = None
