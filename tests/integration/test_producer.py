"""The producer against the real Tansu broker: records land on the topic exactly as
docs/protocol.md says, and every failure is a named error within a bounded time."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import pytest
import torch
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from inferpool.embedded import EmbeddedBroker, free_port
from inferpool.errors import (
    BrokerUnavailable,
    InvalidInput,
    InvalidRequest,
    LifecycleError,
    PayloadTooLarge,
)
from inferpool.protocol import REQUEST_ID_PATTERN, now_ms
from inferpool.protocol.wire import Encoding, WireTensor
from inferpool.settings import InferpoolSettings
from inferpool_app import submit_command as cli
from producer import (
    Producer,
    RequestEnvelope,
    SubmitRequest,
    SyncProducer,
    ensure_topics,
    new_request_id,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CONSUME_TIMEOUT_S = 20


async def _create(settings: InferpoolSettings, *topics: str) -> None:
    await ensure_topics(settings.kafka, topics or [settings.request_topic],
                        settings.request_topic_partitions, settings.request_topic_replication)


async def _consume(settings: InferpoolSettings, topic: str, count: int) -> list[ConsumerRecord]:
    """The first ``count`` records of ``topic``, read from the beginning of every partition.

    Partitions are assigned by hand: joining a consumer group costs Tansu about 5 s."""
    consumer = AIOKafkaConsumer(
        **settings.kafka.client_options(), group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        await consumer.topics()  # fetches the metadata, so the partitions are known
        partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} has no partitions"
        consumer.assign([TopicPartition(topic, partition) for partition in partitions])
        async with asyncio.timeout(CONSUME_TIMEOUT_S):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500)
                records.extend(record for batch in batches.values() for record in batch)
    finally:
        await consumer.stop()
    return records


def _headers(record: ConsumerRecord) -> dict[str, bytes]:
    return {key: bytes(value) for key, value in record.headers}


def _decode(record: ConsumerRecord) -> RequestEnvelope:
    return RequestEnvelope.decode(record.value, Encoding.from_headers(record.headers))


# --- topics -----------------------------------------------------------------------------


async def test_ensure_topics_is_idempotent(settings: InferpoolSettings) -> None:
    topics = [settings.request_topic, settings.dead_letter_topic]
    await ensure_topics(settings.kafka, topics, 3, 1)
    await ensure_topics(settings.kafka, topics, 3, 1)  # already there: no error
    await ensure_topics(settings.kafka, [], 3, 1)
    admin = AIOKafkaAdminClient(**settings.kafka.client_options())
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    assert {topic["topic"]: len(topic["partitions"]) for topic in described} == {
        name: 3 for name in topics
    }


# --- what lands on the topic ------------------------------------------------------------


async def test_submit_lands_on_the_topic_with_key_headers_and_fields(
    settings: InferpoolSettings,
) -> None:
    await _create(settings)
    before = now_ms()
    async with Producer(settings) as producer:
        request_id = await producer.submit(
            "echo", {"x": [1, 2, 3]}, params={"scale": 2}, timeout_ms=5_000,
            traceparent=TRACEPARENT,
        )
    after = now_ms()
    [record] = await _consume(settings, settings.request_topic, 1)
    assert REQUEST_ID_PATTERN.fullmatch(request_id)
    assert record.key == request_id.encode()
    assert _headers(record) == {
        "content-type": b"application/msgpack", "traceparent": TRACEPARENT.encode()
    }
    envelope = _decode(record)
    assert (envelope.id, envelope.model, envelope.version) == (request_id, "echo", 1)
    assert (envelope.inputs, envelope.params) == ({"x": [1, 2, 3]}, {"scale": 2})
    assert before <= envelope.submitted_ms <= after
    assert envelope.deadline_ms == envelope.submitted_ms + 5_000


async def test_json_encoding_and_absolute_deadline(settings: InferpoolSettings) -> None:
    await _create(settings)
    deadline = now_ms() + 60_000
    tensor = WireTensor("float32", (2,), b"\x00\x00\x80?\x00\x00\x00@")
    async with Producer(settings, Encoding.JSON) as producer:
        request_id = await producer.submit("echo", tensor, deadline_ms=deadline,
                                           request_id="order-17:item.3")
    [record] = await _consume(settings, settings.request_topic, 1)
    assert request_id == "order-17:item.3"
    assert record.key == b"order-17:item.3"
    assert _headers(record) == {"content-type": b"application/json"}
    assert record.value.startswith(b"{")
    envelope = _decode(record)
    assert (envelope.inputs, envelope.deadline_ms, envelope.params) == (tensor, deadline, {})


async def test_torch_tensors_are_sent_as_tensors(settings: InferpoolSettings) -> None:
    await _create(settings)
    image = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    async with Producer(settings) as producer:
        await producer.submit("echo", {"image": image, "masks": [torch.tensor([True])]})
    [record] = await _consume(settings, settings.request_topic, 1)
    inputs = _decode(record).inputs
    assert torch.equal(inputs["image"].to_torch(), image)
    assert torch.equal(inputs["masks"][0].to_torch(), torch.tensor([True]))


async def test_submit_many_returns_ids_in_order_and_routes_by_model(
    settings: InferpoolSettings, namespace: str
) -> None:
    routed = settings.model_copy(update={"request_topic": f"{namespace}.{{model}}"})
    await _create(routed, routed.topic_for("echo"), routed.topic_for("sum"))
    requests = [
        SubmitRequest("echo" if n % 2 else "sum", [n], request_id=f"r{n}" if n < 3 else None)
        for n in range(20)
    ]
    async with Producer(routed) as producer:
        ids = await producer.submit_many(requests)
        assert await producer.submit_many([]) == []
    assert ids[:3] == ["r0", "r1", "r2"]
    assert len(set(ids)) == 20
    sums = await _consume(routed, f"{namespace}.sum", 10)
    echoes = await _consume(routed, f"{namespace}.echo", 10)
    got = {record.key.decode(): _decode(record) for record in sums + echoes}
    assert got.keys() == set(ids)
    for request_id, request in zip(ids, requests, strict=True):
        assert (got[request_id].model, got[request_id].inputs) == (request.model, request.inputs)


# --- refused before sending -------------------------------------------------------------


async def test_oversized_payload_is_refused_before_sending(settings: InferpoolSettings) -> None:
    small = settings.model_copy(update={"max_request_bytes": 1_000})
    await _create(small)
    async with Producer(small) as producer:
        with pytest.raises(PayloadTooLarge, match=r"is 10\d\d bytes .*the limit is 1000 bytes"):
            await producer.submit("echo", b"x" * 1_000)
        with pytest.raises(PayloadTooLarge):  # one too large: none of the batch is sent
            await producer.submit_many([SubmitRequest("echo", 1), SubmitRequest("echo", "x" * 999)])
        request_id = await producer.submit("echo", "small")
    records = await _consume(small, small.request_topic, 1)
    assert [record.key for record in records] == [request_id.encode()]


BAD_REQUESTS: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("bad model", {"model": "no/slash"}, InvalidRequest, "model must be"),
    ("bad id", {"request_id": "has space"}, InvalidRequest, "request id must be"),
    ("unencodable", {"inputs": object()}, InvalidInput, "cannot be encoded"),
    ("int map key", {"inputs": {1: "a"}}, InvalidInput, "would not decode on a worker"),
    ("nan in json", {"inputs": float("nan"), "json": True}, InvalidInput, "cannot be encoded"),
    ("complex tensor", {"inputs": torch.zeros(1, dtype=torch.complex64)}, InvalidInput,
     "unsupported tensor dtype"),
    ("params not a map", {"params": [1]}, InvalidRequest, "params must be a mapping"),
    ("both deadlines", {"deadline_ms": 2 * 10**12, "timeout_ms": 5}, InvalidRequest, "not both"),
    ("relative deadline", {"deadline_ms": 5_000}, InvalidRequest, "use timeout_ms"),
    ("zero timeout", {"timeout_ms": 0}, InvalidRequest, "timeout_ms must be"),
    ("bad traceparent", {"traceparent": "abc"}, InvalidRequest, "traceparent must be"),
]


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_request_is_refused_before_sending(
    settings: InferpoolSettings, changes: dict[str, Any], error: type[Exception], message: str
) -> None:
    await _create(settings)
    encoding = Encoding.JSON if changes.pop("json", False) else Encoding.MSGPACK
    arguments: dict[str, Any] = {"model": "echo", "inputs": [1], **changes}
    async with Producer(settings, encoding) as producer:
        with pytest.raises(error, match=message):
            await producer.submit(arguments.pop("model"), arguments.pop("inputs"), **arguments)
        request_id = await producer.submit("echo", "fine")
    records = await _consume(settings, settings.request_topic, 1)
    assert [record.key for record in records] == [request_id.encode()]


# --- lifecycle and failures -------------------------------------------------------------


async def test_lifecycle_is_explicit(settings: InferpoolSettings) -> None:
    producer = Producer(settings)
    with pytest.raises(LifecycleError, match="not started"):
        await producer.submit("echo", 1)
    async with producer:
        with pytest.raises(LifecycleError, match="already started"):
            await producer.start()
    await producer.stop()  # idempotent
    with pytest.raises(LifecycleError, match="stopped"):
        await producer.submit("echo", 1)


def _unreachable(settings: InferpoolSettings) -> InferpoolSettings:
    kafka = settings.kafka.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{free_port()}", "request_timeout_ms": 1_000}
    )
    return settings.model_copy(update={"kafka": kafka})


async def test_unreachable_broker_is_broker_unavailable(settings: InferpoolSettings) -> None:
    unreachable = _unreachable(settings)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="INFERPOOL_KAFKA_BOOTSTRAP_SERVERS") as raised:
        async with Producer(unreachable):
            pass
    assert unreachable.kafka.bootstrap_servers in str(raised.value)
    assert raised.value.retriable
    with pytest.raises(BrokerUnavailable, match="could not create topics"):
        await ensure_topics(unreachable.kafka, ["t"], 1, 1)
    assert time.monotonic() - started < 5


@pytest.mark.slow
async def test_unacknowledged_send_is_broker_unavailable(settings: InferpoolSettings) -> None:
    broker = EmbeddedBroker()  # its own broker, to freeze without disturbing other tests
    await asyncio.to_thread(broker.start)  # start() runs its own event loop
    try:
        kafka = settings.kafka.model_copy(
            update={"bootstrap_servers": broker.bootstrap_servers, "request_timeout_ms": 1_000}
        )
        own = settings.model_copy(update={"kafka": kafka})
        await _create(own)
        async with Producer(own) as producer:
            await producer.submit("echo", 1)
            broker.freeze()
            try:
                started = time.monotonic()
                with pytest.raises(BrokerUnavailable, match="did not answer within 1000 ms"):
                    await producer.submit("echo", 2)
                assert time.monotonic() - started < 5
            finally:
                broker.thaw()
    finally:
        broker.stop()
        broker.cleanup()


# --- the synchronous facade ---------------------------------------------------------------


def test_sync_producer_submits_from_plain_code(settings: InferpoolSettings) -> None:
    asyncio.run(_create(settings))
    with SyncProducer(settings) as producer:
        first = producer.submit("echo", [1], timeout_ms=1_000)
        rest = producer.submit_many(SubmitRequest("echo", [n]) for n in range(2, 4))
        with pytest.raises(InvalidRequest, match="model must be"):
            producer.submit("bad model", 1)
    producer.close()  # idempotent
    with pytest.raises(LifecycleError):
        producer.submit("echo", 1)
    records = asyncio.run(_consume(settings, settings.request_topic, 3))
    assert {record.key.decode() for record in records} == {first, *rest}


def test_sync_producer_start_failure_is_broker_unavailable(settings: InferpoolSettings) -> None:
    producer = SyncProducer(_unreachable(settings))
    with pytest.raises(BrokerUnavailable):
        producer.start()
    producer.close()


# --- the command line ---------------------------------------------------------------------


def _args(**values: Any) -> argparse.Namespace:
    defaults: dict[str, Any] = {"model": "echo", "input": "[1, 2]", "params": None,
                                "deadline_ms": None, "json": False, "wait": None}
    return argparse.Namespace(**{**defaults, **values})


def test_cli_registers_submit() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["submit", "--model", "echo", "--input", "[1]",
                              "--deadline-ms", "500", "--json", "--wait", "2.5"])
    assert args.func is cli.run
    assert (args.model, args.input, args.deadline_ms, args.json, args.wait) == (
        "echo", "[1]", 500, True, 2.5
    )


def test_cli_submit_prints_the_request_id(
    settings: InferpoolSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_create(settings))
    tensor = '{"$tensor": {"dtype": "uint8", "shape": [2], "data": "AQI="}}'
    code = cli.run(_args(input=tensor, params='{"k": 1}', deadline_ms=9_000, json=True),
                   settings)
    assert code == 0
    request_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert REQUEST_ID_PATTERN.fullmatch(request_id)
    [record] = asyncio.run(_consume(settings, settings.request_topic, 1))
    envelope = _decode(record)
    assert record.key == request_id.encode()
    assert _headers(record)["content-type"] == b"application/json"
    assert envelope.inputs == WireTensor("uint8", (2,), b"\x01\x02")
    assert envelope.params == {"k": 1}
    assert envelope.deadline_ms == envelope.submitted_ms + 9_000


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"input": "[1, "}, "--input is not valid JSON"),
        ({"input": '{"$tensor": {"dtype": "uint8"}}'}, "--input: "),
        ({"params": "[1]"}, "--params must be a JSON object"),
        ({"deadline_ms": 0}, "--deadline-ms must be a positive number"),
        ({"model": "bad model"}, "invalid_request: model must be"),
    ],
)
def test_cli_bad_arguments_exit_2(
    settings: InferpoolSettings, capsys: pytest.CaptureFixture[str], values: dict[str, Any],
    message: str,
) -> None:
    assert cli.run(_args(**values), settings) == 2
    assert message in capsys.readouterr().err


def test_cli_wait_without_a_result_exits_3(
    settings: InferpoolSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_create(settings))
    assert cli.run(_args(wait=0.2), settings) == 3
    err = capsys.readouterr().err
    assert "no result for request" in err


def test_package_exports_the_public_api() -> None:
    import producer

    assert all(hasattr(producer, name) for name in producer.__all__)
    assert REQUEST_ID_PATTERN.fullmatch(new_request_id())
