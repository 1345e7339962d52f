"""Intake: a fetched Kafka record becomes a PendingRequest, or a Rejection that says why.

Checks, in order: a marker for an unreadable batch, a value at all (null and empty values
are refused), the size limit (before decoding), the content type, the envelope, that the
record key is the envelope's id, the model, the model's own validation of the inputs.

A rejection's result is stored under the record *key* (when the key is a valid id), never
under an id read from the value: the first write wins, so a value could otherwise pre-empt
another request's result with a forged id. Nothing here raises for bad input.
"""

from __future__ import annotations

from typing import Any

from inferpool.errors import (
    InvalidInput,
    InvalidRequest,
    MalformedRequest,
    PayloadTooLarge,
    RequestError,
    UnreadableBatch,
)
from inferpool.protocol import RequestEnvelope, id_from_key
from inferpool.protocol.headers import MAX_TRACE_CHARS, TRACEPARENT_HEADER, header
from inferpool.protocol.wire import Encoding
from worker.kafka_batches import BatchFailure, unreadable
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


def _unreadable_error(failure: BatchFailure) -> UnreadableBatch:
    return UnreadableBatch(
        f"the record batch at offsets {failure.first_offset}-{failure.last_offset} could not "
        f"be read ({failure.reason}); its records were not run: send them again (readable "
        "codecs: gzip, snappy, lz4, zstd)"
    )


def _key_mismatch(key: bytes | None, request_id: str) -> str:
    shown = "no key" if key is None else f"key {key[:140]!r}"
    return (
        f"the record's {shown} is not its request id {request_id!r}: publish each request with "
        "its id as the record key (docs/protocol.md, section 2.1)"
    )


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

    def _value(self, record: KafkaRecord) -> bytes:
        """The record's value, if it is one a request can be in."""
        value = record.value
        if value is None:
            raise MalformedRequest(
                "the record has no value (a tombstone); a request is a msgpack or JSON map"
            )
        if not value:
            raise MalformedRequest("the record's value is empty; a request is a msgpack or JSON "
                                   "map")
        if len(value) > self._max_request_bytes:
            raise PayloadTooLarge(
                f"request is {len(value)} bytes; the limit is {self._max_request_bytes} "
                "(INFERPOOL_MAX_REQUEST_BYTES)"
            )
        return value

    def _admit(
        self, record: KafkaRecord, token: OffsetToken, now_monotonic: float, now_ms: int
    ) -> PendingRequest | Rejection:
        failure = unreadable(record)
        if failure is not None:
            return Rejection(record, token, None, _unreadable_error(failure), Encoding.MSGPACK)
        raw_trace = header(record.headers, TRACEPARENT_HEADER)
        traceparent = raw_trace.decode("ascii", "replace")[:MAX_TRACE_CHARS] if raw_trace else None
        encoding = Encoding.MSGPACK
        envelope: RequestEnvelope | None = None
        try:
            encoding = Encoding.from_headers(record.headers or ())
            envelope = RequestEnvelope.decode(self._value(record), encoding)
            if record.key != envelope.id.encode():  # the id itself was checked by decode
                raise InvalidRequest(_key_mismatch(record.key, envelope.id))
            model = self._registry.get(envelope.model)
            item = _validate(model, envelope)
        except RequestError as error:
            model_name = envelope.model if envelope is not None else None
            return Rejection(record, token, id_from_key(record.key), error, encoding,
                             model_name, traceparent)
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
