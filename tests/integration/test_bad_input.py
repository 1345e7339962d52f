"""Bad input never stops the pool: each bad record, mixed among good ones, gets an error
result with a stable code (when its id can be read) and a dead-letter copy; the good ones
are answered; the offsets move past all of them."""

from __future__ import annotations

import json
import pickle

import msgpack
import testing_models
from aiokafka import AIOKafkaProducer
from pool_helpers import collect, read_topic, running_worker, wait_until_committed

from inferpool.protocol import ResultStatus
from inferpool.protocol.headers import ERROR_CODE_HEADER, SOURCE_OFFSET_HEADER
from inferpool.protocol.wire import WireTensor, pack_msgpack
from inferpool.settings import InferpoolSettings

MAX_REQUEST_BYTES = 4096


def envelope(request_id: str, **fields: object) -> dict[str, object]:
    return {
        "version": 1,
        "id": request_id,
        "model": "echo",
        "inputs": request_id,
        "submitted_ms": 0,
        **fields,
    }


MSGPACK = [("content-type", b"application/msgpack")]
JSON = [("content-type", b"application/json")]

# (record key, value, headers, expected error code)
BAD_RECORDS: list[tuple[bytes | None, bytes, list[tuple[str, bytes]], str | None]] = [
    (b"bad-bytes", b"\xc1\xff\x00 not msgpack", MSGPACK, "malformed_request"),
    (b"bad-truncated", pack_msgpack(envelope("bad-truncated"))[:-3], MSGPACK, "malformed_request"),
    (b"bad-json", b"{not json", JSON, "malformed_request"),
    (b"bad-pickle", pickle.dumps({"id": "bad-pickle"}), MSGPACK, "malformed_request"),
    (b"bad-content-type", b"<xml/>", [("content-type", b"application/xml")], "malformed_request"),
    (
        b"bad-missing",
        msgpack.packb({"version": 1, "id": "bad-missing", "model": "echo"}),
        MSGPACK,
        "invalid_request",
    ),
    (
        b"bad-version",
        pack_msgpack(envelope("bad-version", version=99)),
        MSGPACK,
        "unsupported_version",
    ),
    (
        b"bad-model",
        pack_msgpack(envelope("bad-model", model="no-such-model")),
        MSGPACK,
        "unknown_model",
    ),
    (
        b"bad-dtype",
        pack_msgpack(
            envelope("bad-dtype", model="vector", inputs=WireTensor("int32", (4,), bytes(16)))
        ),
        MSGPACK,
        "invalid_input",
    ),
    (
        b"bad-shape",
        pack_msgpack(
            envelope("bad-shape", model="vector", inputs=WireTensor("float32", (3,), bytes(12)))
        ),
        MSGPACK,
        "invalid_input",
    ),
    (b"bad-empty", b"", MSGPACK, "malformed_request"),
    (
        b"bad-too-large",
        pack_msgpack(envelope("bad-too-large", inputs="x" * MAX_REQUEST_BYTES)),
        MSGPACK,
        "payload_too_large",
    ),
    (
        b"bad-json-types",
        json.dumps(envelope("bad-json-types", deadline_ms="soon")).encode(),
        JSON,
        "invalid_request",
    ),
    (None, b"\x00\x01 no key and no value", MSGPACK, None),
]


async def test_each_bad_record_gets_an_error_and_a_dead_letter(settings: InferpoolSettings) -> None:
    settings = settings.model_copy(
        update={"max_request_bytes": MAX_REQUEST_BYTES, "request_topic_partitions": 1}
    )
    model = testing_models.RecordingEcho()
    good_ids = [f"good-{index}" for index in range(len(BAD_RECORDS) + 1)]
    async with running_worker(settings, model, testing_models.VectorModel()):
        producer = AIOKafkaProducer(enable_idempotence=False, **settings.kafka.client_options())
        await producer.start()
        try:
            for index, (key, value, headers, _) in enumerate(BAD_RECORDS):
                good = good_ids[index]
                await producer.send(
                    settings.request_topic,
                    pack_msgpack(envelope(good)),
                    key=good.encode(),
                    headers=MSGPACK,
                )
                await producer.send(settings.request_topic, value, key=key, headers=headers)
            await producer.send_and_wait(
                settings.request_topic,
                pack_msgpack(envelope(good_ids[-1])),
                key=good_ids[-1].encode(),
                headers=MSGPACK,
            )
        finally:
            await producer.stop()
        expected = {key.decode(): code for key, _, _, code in BAD_RECORDS if key}
        results = await collect(settings, [*good_ids, *expected])
        dead = await read_topic(settings, settings.dead_letter_topic, len(BAD_RECORDS))
        await wait_until_committed(settings, 2 * len(BAD_RECORDS) + 1)

    for request_id, code in expected.items():
        result = results[request_id]
        assert result.status is ResultStatus.ERROR, request_id
        assert result.error is not None and result.error.code == code, request_id
        assert result.error.message
    assert all(results[i].status is ResultStatus.OK and results[i].outputs == i for i in good_ids)
    assert sorted(model.calls) == sorted(good_ids)

    codes = sorted(dict(record.headers)[ERROR_CODE_HEADER].decode() for record in dead)
    assert codes == sorted(code or "malformed_request" for *_, code in BAD_RECORDS)
    assert {record.value for record in dead} == {value for _, value, _, _ in BAD_RECORDS}
    assert all(SOURCE_OFFSET_HEADER in dict(record.headers) for record in dead)
