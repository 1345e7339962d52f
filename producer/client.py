"""Producer: publish inference requests to Kafka and wait for the broker's acknowledgement.

Every request is validated and encoded before anything is sent, so a bad request fails in
the caller, not on a worker. Errors are never silent: Kafka not answering becomes
``BrokerUnavailable`` (retriable; retry with the same ``request_id``, a duplicate never
replaces a result), an oversized request ``PayloadTooLarge``, any other refusal ``SubmitError``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    UnknownTopicOrPartitionError,
)

from inferpool.errors import (
    ConfigurationError,
    InvalidInput,
    InvalidRequest,
    PayloadTooLarge,
    RequestError,
    SubmitError,
)
from inferpool.kafka_connect import GRACE_S, broker_unavailable, start_client
from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from inferpool.protocol import (
    Priority,
    RequestEnvelope,
    check_model_name,
    check_request_id,
    check_tenant,
    lane_topic,
    new_request_id,
    now_ms,
    predicted_wait_s,
)
from inferpool.protocol.headers import TRACEPARENT_HEADER, TRACEPARENT_PATTERN
from inferpool.protocol.wire import Encoding, WireTensor
from inferpool.settings import InferpoolSettings
from producer.admission import check_admission
from producer.control import RequestControl

log = get_logger("producer")

#: A deadline before this (September 2001, in epoch ms) is surely a relative timeout.
EARLIEST_DEADLINE_MS = 1_000_000_000_000
#: Room in a Kafka produce request for the key, the headers and the batch framing.
RECORD_OVERHEAD_BYTES = 64 * 1024
KAFKA_DEFAULT_MAX_REQUEST_SIZE = 1_048_576


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """One request for ``Producer.submit_many``; the fields are ``submit``'s arguments."""

    model: str
    inputs: Any
    params: Mapping[str, Any] | None = None
    deadline_ms: int | None = None
    timeout_ms: int | None = None
    request_id: str | None = None
    traceparent: str | None = None
    priority: Priority | str = Priority.NORMAL
    tenant: str | None = None
    admission: bool = False


@dataclass(frozen=True, slots=True)
class _Record:
    """A validated, encoded request, ready to hand to Kafka."""

    request_id: str
    model: str
    topic: str
    value: bytes
    headers: list[tuple[str, bytes]]
    envelope: RequestEnvelope
    admission: bool


class Producer(Service):
    """Publishes requests; use as ``async with Producer(settings) as producer``.

    ``control`` (a started ``results.reader.ResultReader``, or anything with its
    ``request_cancel`` and ``load``) is needed only for ``cancel`` and for
    ``submit(..., admission=True)``."""

    def __init__(
        self,
        settings: InferpoolSettings,
        encoding: Encoding = Encoding.MSGPACK,
        control: RequestControl | None = None,
    ) -> None:
        self._settings = settings
        self._encoding = encoding
        self._control = control
        self._timeout_s = settings.kafka.request_timeout_ms / 1000 + GRACE_S
        self._kafka: AIOKafkaProducer | None = None

    @property
    def encoding(self) -> Encoding:
        return self._encoding

    async def _start(self) -> None:
        kafka = AIOKafkaProducer(
            **self._settings.kafka.client_options(),
            acks="all",
            enable_idempotence=False,
            linger_ms=2,
            max_request_size=max(
                KAFKA_DEFAULT_MAX_REQUEST_SIZE,
                self._settings.max_request_bytes + RECORD_OVERHEAD_BYTES,
            ),
        )
        await start_client(
            kafka.start, kafka.stop, self._settings.kafka, "could not start the producer"
        )
        self._kafka = kafka
        log.info("producer.started", bootstrap_servers=self._settings.kafka.bootstrap_servers,
                 encoding=self._encoding.value)

    async def _stop(self) -> None:
        kafka, self._kafka = self._kafka, None
        if kafka is None:
            return
        try:
            await asyncio.wait_for(kafka.stop(), self._timeout_s)
        except TimeoutError:
            log.warning("producer.stop_timeout", timeout_s=self._timeout_s)
        log.info("producer.stopped")

    async def submit(
        self,
        model: str,
        inputs: Any,
        *,
        params: Mapping[str, Any] | None = None,
        deadline_ms: int | None = None,
        timeout_ms: int | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
        priority: Priority | str = Priority.NORMAL,
        tenant: str | None = None,
        admission: bool = False,
    ) -> str:
        """Publish one request and return its id once Kafka has acknowledged it.

        ``deadline_ms`` is absolute (Unix epoch ms); ``timeout_ms`` is relative to now. Torch
        tensors in ``inputs`` or ``params`` are sent as tensors. ``priority`` (high, normal,
        low) picks the lane's topic; ``tenant`` names whose request it is (fair share, rate
        limits). ``admission``: first ask the workers' load summaries whether the request
        can finish by its deadline; if not, raise ``AdmissionRefused`` (retriable) and
        publish nothing.
        """
        request = SubmitRequest(model, inputs, params, deadline_ms, timeout_ms, request_id,
                                traceparent, priority, tenant, admission)
        return (await self.submit_many([request]))[0]

    async def cancel(self, request_id: str) -> None:
        """Cancel a request: a worker that has not started it answers ``cancelled`` without
        running it; a generation stops at its next step; a request that has its result
        already keeps it. Needs ``control``."""
        check_request_id(request_id)
        await self._controls().request_cancel(request_id)
        log.info("producer.cancel_requested", id=request_id)

    async def predicted_wait_ms(self, model: str, priority: Priority | str = "normal") -> float:
        """What admission at submit would predict now for a request of ``model`` at
        ``priority``: submit to answer, in ms, from the workers' load summaries (0 when no
        worker reports on the model). Needs ``control``."""
        summaries = await self._controls().load(check_model_name(model))
        return predicted_wait_s(summaries, Priority.parse(priority), now_ms()) * 1000

    def _controls(self) -> RequestControl:
        if self._control is None:
            raise ConfigurationError(
                "cancel and admission need the result store: pass control=ResultReader(...) "
                "(results.reader) to the Producer"
            )
        return self._control

    async def submit_many(self, requests: Iterable[SubmitRequest]) -> list[str]:
        """Validate all, send all, then wait for every acknowledgement; ids in order.

        The whole call has one Kafka request timeout to finish in. On an error some of the
        requests may have been published: to retry safely, give each its own ``request_id``.
        """
        self._require_started()
        assert self._kafka is not None
        records = [self._prepare(request) for request in requests]
        if not records:
            return []
        await self._admit(records)
        try:
            await self._publish(self._kafka, records)
        except Exception as error:
            log.warning("producer.submit_failed", count=len(records),
                        code=getattr(error, "code", None), error=str(error))
            raise
        return [record.request_id for record in records]

    async def _admit(self, records: list[_Record]) -> None:
        """Admission at submit for the records that ask for it (one read per model)."""
        asking = [record for record in records if record.admission]
        if not asking:
            return
        control = self._controls()
        loads = {model: await control.load(model) for model in {r.model for r in asking}}
        for record in asking:
            envelope = record.envelope
            check_admission(record.request_id, record.model, envelope.priority,
                            envelope.deadline_ms, loads[record.model])

    async def _publish(self, kafka: AIOKafkaProducer, records: list[_Record]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        futures: list[asyncio.Future[Any]] = []
        current = records[0]
        try:
            for current in records:
                send = kafka.send(current.topic, current.value, key=current.request_id.encode(),
                                  headers=current.headers)
                futures.append(await asyncio.wait_for(send, deadline - loop.time()))
            await asyncio.wait(futures, timeout=max(deadline - loop.time(), 0))
            for current, future in zip(records, futures, strict=True):
                if not future.done():
                    raise TimeoutError
                metadata = future.result()
                log.debug("producer.submitted", id=current.request_id, model=current.model,
                          topic=current.topic, partition=metadata.partition,
                          offset=metadata.offset, bytes=len(current.value))
        except TimeoutError:
            raise broker_unavailable(self._settings.kafka,
                                     "a request was not acknowledged") from None
        except KafkaError as error:
            raise self._kafka_error(error, current) from None
        finally:
            _settle(futures)

    def _prepare(self, request: SubmitRequest) -> _Record:
        model = check_model_name(request.model)
        request_id = (
            new_request_id() if request.request_id is None else check_request_id(request.request_id)
        )
        submitted_ms = now_ms()
        priority = Priority.parse(request.priority)
        envelope = RequestEnvelope(
            id=request_id,
            model=model,
            inputs=_to_wire(request.inputs),
            params=_to_wire(_check_params(request.params)),
            deadline_ms=_deadline(request.deadline_ms, request.timeout_ms, submitted_ms),
            submitted_ms=submitted_ms,
            priority=priority,
            tenant=check_tenant(request.tenant),
        )
        headers = envelope.headers(self._encoding)
        if request.traceparent is not None:
            headers.append((TRACEPARENT_HEADER, _check_traceparent(request.traceparent)))
        topic = lane_topic(self._settings.topic_for(model), priority)
        return _Record(request_id, model, topic, self._encode(envelope), headers, envelope,
                       request.admission)

    def _encode(self, envelope: RequestEnvelope) -> bytes:
        """Encode; check the size limit and that a worker will decode it."""
        name = self._encoding.name.lower()
        try:
            value = envelope.encode(self._encoding)
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            raise InvalidInput(
                f"request {envelope.id}: inputs or params cannot be encoded as {name}: {error}"
            ) from None
        limit = self._settings.max_request_bytes
        if len(value) > limit:
            raise PayloadTooLarge(
                f"request {envelope.id} is {len(value)} bytes encoded as {name}; the limit is "
                f"{limit} bytes (INFERPOOL_MAX_REQUEST_BYTES): send smaller inputs"
            )
        try:
            RequestEnvelope.decode(value, self._encoding)
        except RequestError as error:
            raise InvalidInput(
                f"request {envelope.id} would not decode on a worker: {error}"
            ) from None
        return value

    def _kafka_error(self, error: KafkaError, record: _Record) -> Exception:
        """The inferpool error for a Kafka error raised while publishing ``record``."""
        if isinstance(error, MessageSizeTooLargeError | RecordListTooLargeError):
            return PayloadTooLarge(
                f"Kafka refused request {record.request_id} ({len(record.value)} bytes) as too "
                "large; lower INFERPOOL_MAX_REQUEST_BYTES or raise the topic's max.message.bytes"
            )
        if isinstance(error, UnknownTopicOrPartitionError):
            return broker_unavailable(
                self._settings.kafka,
                f"topic {record.topic!r} is unknown (a worker creates it at start, or create it)",
            )
        if error.retriable:
            return broker_unavailable(self._settings.kafka,
                                      f"sending failed ({type(error).__name__})")
        return SubmitError(
            f"Kafka refused request {record.request_id} to topic {record.topic!r}: "
            f"{type(error).__name__}: {error}"
        )


def _settle(futures: list[asyncio.Future[Any]]) -> None:
    """Stop waiting on unfinished sends (they may still be delivered); consume errors."""
    for future in futures:
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            future.exception()


def _deadline(deadline_ms: int | None, timeout_ms: int | None, submitted_ms: int) -> int | None:
    if deadline_ms is not None and timeout_ms is not None:
        raise InvalidRequest("give deadline_ms (absolute) or timeout_ms (relative), not both")
    if timeout_ms is not None:
        if not _is_int(timeout_ms) or timeout_ms <= 0:
            raise InvalidRequest("timeout_ms must be a positive integer (milliseconds from now)")
        return submitted_ms + timeout_ms
    if deadline_ms is not None and (not _is_int(deadline_ms) or deadline_ms < EARLIEST_DEADLINE_MS):
        raise InvalidRequest(
            "deadline_ms must be an absolute time in Unix epoch milliseconds; "
            "for a relative timeout use timeout_ms"
        )
    return deadline_ms


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping) or not all(isinstance(key, str) for key in params):
        raise InvalidRequest("params must be a mapping with string keys")
    return dict(params)


def _check_traceparent(traceparent: str) -> bytes:
    if not isinstance(traceparent, str) or not TRACEPARENT_PATTERN.fullmatch(traceparent):
        raise InvalidRequest(
            "traceparent must be a W3C trace context header, e.g. "
            "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"
        )
    return traceparent.encode("ascii")


def _to_wire(value: Any) -> Any:
    """``value`` with every torch tensor in it replaced by a WireTensor."""
    torch = sys.modules.get("torch")
    if torch is None:  # no torch tensor can exist
        return value
    if isinstance(value, torch.Tensor):
        return WireTensor.from_torch(value)
    if isinstance(value, dict):
        return {key: _to_wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_wire(item) for item in value]
    return value
