"""Conformance: records published as other languages' services publish them — with
librdkafka (confluent-kafka, the client behind Go, .NET, Ruby and PHP services) and its real
options, not with our producer. Every record shape ends with its documented answer (a
result under the key, and/or a dead-letter copy), a good request sent after them is
answered, and the worker is still alive."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import msgpack
import pytest
from pool_helpers import (
    WorkerProcess,
    collect,
    read_topic,
    running_worker,
    wait_until_committed,
)

from inferpool.protocol import ResultStatus
from inferpool.protocol.headers import (
    ERROR_CODE_HEADER,
    ORIGINAL_SIZE_HEADER,
    SOURCE_OFFSET_HEADER,
    TRUNCATED_HEADER,
)
from inferpool.protocol.wire import pack_msgpack
from inferpool.settings import InferpoolSettings
from inferpool.topics import ensure_topics
from worker.models.echo import EchoModel

pytestmark = pytest.mark.slow

MAX_REQUEST_BYTES = 1_048_576
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def request(request_id: str, inputs: Any = None, **fields: Any) -> bytes:
    return pack_msgpack({"version": 1, "id": request_id, "model": "echo",
                         "inputs": request_id if inputs is None else inputs, **fields})


def produce(settings: InferpoolSettings, records: list[dict[str, Any]], **config: Any) -> None:
    """Publish with librdkafka, as a Go or .NET service would, and wait for every ack."""
    producer = confluent_kafka.Producer({
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "acks": "all", "enable.idempotence": False, "linger.ms": 5,
        "message.max.bytes": 8 * 1024 * 1024, **config,
    })
    failures: list[Any] = []
    for record in records:
        producer.produce(settings.request_topic,
                         on_delivery=lambda error, _: failures.append(error) if error else None,
                         **record)
    assert producer.flush(30) == 0, "not every record was acknowledged"
    assert not failures, failures


@pytest.fixture
def conformance(settings: InferpoolSettings) -> Iterator[InferpoolSettings]:
    yield settings.model_copy(update={"max_request_bytes": MAX_REQUEST_BYTES})


@pytest.mark.parametrize("codec", CODECS)
async def test_every_codec_is_read(conformance: InferpoolSettings, codec: str) -> None:
    settings = conformance
    await ensure_topics(settings.kafka, [settings.request_topic], 4, 1)
    ids = [f"{codec}-{i}" for i in range(50)]
    await asyncio.to_thread(produce, settings, [
        {"key": rid.encode(), "value": request(rid, {"n": i, "text": "ok " * i})}
        for i, rid in enumerate(ids)
    ], **{"compression.type": codec})
    async with running_worker(settings, EchoModel()) as worker:
        found = await collect(settings, ids)
        assert worker.failed is None
    assert all(found[rid].status is ResultStatus.OK for rid in ids)
    assert found[ids[7]].outputs == {"n": 7, "text": "ok " * 7}


def odd_records() -> list[tuple[dict[str, Any], str | None, str | None]]:
    """(the record as produced, the id its answer is stored under, the expected error code);
    an id of None: no result can be stored, only a dead-letter copy."""
    shallow = msgpack.packb({"version": 1, "id": "deep", "model": "echo", "inputs": None})
    deep = shallow[:-1] + b"\x91" * 20_000 + b"\xc0"  # inputs: arrays nested 20,000 deep
    return [
        ({"key": b"big", "value": request("big", "x" * (2 * MAX_REQUEST_BYTES))},
         "big", "payload_too_large"),
        ({"key": b"bad-mismatch", "value": request("victim-id")}, "bad-mismatch",
         "invalid_request"),
        ({"key": b"tombstone", "value": None}, "tombstone", "malformed_request"),
        ({"key": b"empty", "value": b""}, "empty", "malformed_request"),
        ({"key": None, "value": request("keyless")}, None, "invalid_request"),
        ({"key": None, "value": None}, None, "malformed_request"),
        ({"key": b"truncated", "value": request("truncated")[:-4]}, "truncated",
         "malformed_request"),
        ({"key": b"deep", "value": deep}, "deep", "malformed_request"),
        ({"key": b"wrong-type", "value": msgpack.packb(["version", 1, "id", "wrong-type"])},
         "wrong-type", "malformed_request"),
        ({"key": b"model-int", "value": pack_msgpack({"version": 1, "id": "model-int",
                                                       "model": 7, "inputs": 1})},
         "model-int", "invalid_request"),
        ({"key": b"null-header", "value": request("null-header"),
          "headers": [("content-type", None), ("x-anything", None)]}, "null-header", None),
    ]


async def test_odd_records_get_their_documented_answers_and_the_pool_goes_on(
    conformance: InferpoolSettings,
) -> None:
    settings = conformance
    await ensure_topics(settings.kafka, [settings.request_topic], 1, 1)
    cases = odd_records()
    records = [record for record, _, _ in cases]
    records.append({"key": b"good-after", "value": request("good-after")})
    await asyncio.to_thread(produce, settings, records, **{"compression.type": "lz4"})
    async with running_worker(settings, EchoModel()) as worker:
        ids = [rid for _, rid, _ in cases if rid is not None] + ["good-after"]
        found = await collect(settings, ids)
        await wait_until_committed(settings, len(records))
        expected_copies = sum(1 for _, _, code in cases if code is not None)
        dead = await read_topic(settings, settings.dead_letter_topic, expected_copies)
        assert worker.failed is None and worker.ready()
    for _, rid, code in cases:
        if rid is None:
            continue
        record = found[rid]
        if code is None:
            assert record.status is ResultStatus.OK, (rid, record.error)
        else:
            assert record.error is not None and record.error.code == code, (rid, record.error)
    assert found["good-after"].status is ResultStatus.OK
    assert "victim-id" not in found
    codes = sorted(dict(r.headers)[ERROR_CODE_HEADER].decode() for r in dead)
    assert codes == sorted(code for _, _, code in cases if code is not None)
    assert all(SOURCE_OFFSET_HEADER in dict(r.headers) for r in dead)
    [big] = [r for r in dead if r.key == b"big"]
    assert dict(big.headers)[TRUNCATED_HEADER] == b"true"
    assert int(dict(big.headers)[ORIGINAL_SIZE_HEADER]) > 2 * MAX_REQUEST_BYTES
    assert len(big.value) < MAX_REQUEST_BYTES


async def test_a_forged_id_never_pre_empts_the_real_request(
    conformance: InferpoolSettings,
) -> None:
    settings = conformance
    await ensure_topics(settings.kafka, [settings.request_topic], 1, 1)
    await asyncio.to_thread(produce, settings, [
        {"key": b"attacker", "value": request("victim", "forged answer")},
        {"key": b"victim", "value": request("victim", "the real question")},
    ])
    async with running_worker(settings, EchoModel()):
        found = await collect(settings, ["attacker", "victim"])
    assert found["victim"].outputs == "the real question"
    assert found["attacker"].error is not None
    assert found["attacker"].error.code == "invalid_request"


async def test_a_decompression_bomb_costs_its_bound_not_its_size(
    conformance: InferpoolSettings, tmp_path: Path
) -> None:
    """A 256 MB value gzips to a few hundred KB; the worker must refuse to inflate it past
    max_decompressed_batch_bytes (16 MB here) and go on."""
    settings = conformance
    await ensure_topics(settings.kafka, [settings.request_topic], 1, 1)
    worker = WorkerProcess(settings, tmp_path, "bombed", models="echo",
                           extra_env={"INFERPOOL_MAX_DECOMPRESSED_BATCH_BYTES": "16777216"})
    worker.start()
    try:
        await worker.wait_for_event("rebalance.assigned", timeout_s=60)
        before_kb = peak_rss_kb(worker)
        bomb = request("bomb", "\0" * (256 * 1024 * 1024))
        await asyncio.to_thread(produce, settings, [{"key": b"bomb", "value": bomb}],
                                **{"compression.type": "gzip", "message.max.bytes": 400_000_000})
        del bomb
        await asyncio.to_thread(produce, settings, [{"key": b"after", "value": request("after")}])
        found = await collect(settings, ["after"], timeout_s=60)
        dead = await read_topic(settings, settings.dead_letter_topic, 1)
        grown_mb = (peak_rss_kb(worker) - before_kb) / 1024
    finally:
        worker.kill()
    assert found["after"].status is ResultStatus.OK
    assert dict(dead[0].headers)[ERROR_CODE_HEADER] == b"unreadable_batch"
    assert grown_mb < 100, f"the worker's peak memory grew by {grown_mb:.0f} MB"


def peak_rss_kb(worker: WorkerProcess) -> int:
    assert worker.process is not None
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


async def test_a_refused_dead_letter_topic_holds_no_answer_and_no_commit(
    conformance: InferpoolSettings,
) -> None:
    """Every copy is refused (a topic name no broker accepts): the records are answered and
    committed all the same, and the lost copies are counted."""
    settings = conformance.model_copy(update={
        "create_topics": False, "dead_letter_topic": "no such topic!",
        "dead_letter_timeout_ms": 300,
    })
    await ensure_topics(settings.kafka, [settings.request_topic], 1, 1)
    await asyncio.to_thread(produce, settings, [
        {"key": b"bad-1", "value": b"\xc1"}, {"key": b"good-1", "value": request("good-1")},
    ])
    async with running_worker(settings, EchoModel()) as worker:
        found = await collect(settings, ["bad-1", "good-1"], timeout_s=20)
        await wait_until_committed(settings, 2, timeout_s=10)

        async with asyncio.timeout(30):
            while not _any_dead_letter_failure(worker):
                await asyncio.sleep(0.1)
        assert worker.failed is None
    assert found["bad-1"].error is not None and found["good-1"].status is ResultStatus.OK


def _any_dead_letter_failure(worker: Any) -> bool:
    text = worker.metrics.exposition().decode()
    return any(line.startswith("inferpool_dead_letter_failures_total{") and
               not line.rstrip().endswith(" 0.0") for line in text.splitlines())
