"""Intake: a fetched Kafka record becomes a PendingRequest, or a Rejection that says why.

Checks, in order: the size limit (before decoding), the content type, the envelope, the
model, the model's own validation of the inputs. Nothing here raises for bad input.
"""

from __future__ import annotations

from typing import Any

from inferpool.errors import InvalidInput, MalformedRequest, PayloadTooLarge, RequestError
from inferpool.protocol import RequestEnvelope, id_from_key
from inferpool.protocol.headers import MAX_TRACE_CHARS, TRACEPARENT_HEADER, header
from inferpool.protocol.wire import Encoding
from worker.models.base import Model
from worker.models.registry import ModelRegistry
from worker.offsets import OffsetToken
from worker.request import KafkaRecord, PendingRequest, Rejection


def _validate(model: Model, envelope: RequestEnvelope) -> Any:
    try:
        return model.validate(envelope.inputs, envelope.params)
    except RequestError:
        raise
    except Exception as error:  # a model's own check failing is still this request's problem
        raise InvalidInput(f"model {model.name!r} rejected the inputs: {error}") from None


class Intake:
    def __init__(self, registry: ModelRegistry, max_request_bytes: int) -> None:
        self._registry = registry
        self._max_request_bytes = max_request_bytes

    def admit(
        self, record: KafkaRecord, token: OffsetToken, now_monotonic: float, now_ms: int
    ) -> PendingRequest | Rejection:
        """Never raises: a record that breaks intake in a way nobody foresaw is rejected as
        malformed (one such record must not stop the fetch loop of every worker)."""
        try:
            return self._admit(record, token, now_monotonic, now_ms)
        except Exception as error:
            return Rejection(
                record,
                token,
                id_from_key(record.key),
                MalformedRequest(f"the request could not be read: {type(error).__name__}"),
                Encoding.MSGPACK,
            )

    def _admit(
        self, record: KafkaRecord, token: OffsetToken, now_monotonic: float, now_ms: int
    ) -> PendingRequest | Rejection:
        raw_trace = header(record.headers, TRACEPARENT_HEADER)
        traceparent = raw_trace.decode("ascii", "replace")[:MAX_TRACE_CHARS] if raw_trace else None
        encoding = Encoding.MSGPACK
        envelope: RequestEnvelope | None = None
        try:
            encoding = Encoding.from_headers(record.headers or ())
            value = record.value or b""
            if len(value) > self._max_request_bytes:
                raise PayloadTooLarge(
                    f"request is {len(value)} bytes; the limit is {self._max_request_bytes} "
                    "(INFERPOOL_MAX_REQUEST_BYTES)"
                )
            envelope = RequestEnvelope.decode(value, encoding)
            model = self._registry.get(envelope.model)
            item = _validate(model, envelope)
        except RequestError as error:
            request_id = envelope.id if envelope is not None else id_from_key(record.key)
            return Rejection(
                record,
                token,
                request_id,
                error,
                encoding,
                envelope.model if envelope else None,
                traceparent,
            )
        deadline = None
        if envelope.deadline_ms is not None:
            deadline = now_monotonic + (envelope.deadline_ms - now_ms) / 1000.0
        return PendingRequest(
            envelope,
            item,
            token,
            encoding,
            now_monotonic,
            now_ms,
            deadline,
            traceparent,
            record=record,
        )
