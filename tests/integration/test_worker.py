"""One in-process worker against the real broker and Redis: the pipeline, batching,
deadlines, model failures and offsets."""

from __future__ import annotations

import testing_models
from pool_helpers import collect, running_worker, wait_until_committed

from inferpool.protocol import ResultStatus, now_ms
from inferpool.protocol.wire import Encoding, WireTensor
from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest


async def test_echo_answers_every_request_with_its_inputs(settings: InferpoolSettings) -> None:
    model = testing_models.RecordingEcho()
    inputs = [{"n": index, "text": f"hello {index}"} for index in range(200)]
    async with running_worker(settings, model) as worker, Producer(settings) as producer:
        ids = await producer.submit_many(SubmitRequest("echo", value) for value in inputs)
        results = await collect(settings, ids)
        await wait_until_committed(settings, len(ids))
    assert [results[i].outputs for i in ids] == inputs
    assert all(r.status is ResultStatus.OK and r.worker == worker.id for r in results.values())
    assert sorted(call["n"] for call in model.calls) == list(range(200))


async def test_requests_arriving_together_share_batches(settings: InferpoolSettings) -> None:
    model = testing_models.RecordingEcho()
    settings = settings.model_copy(update={"max_batch_size": 16, "max_wait_ms": 50})
    async with running_worker(settings, model), Producer(settings) as producer:
        ids = await producer.submit_many(SubmitRequest("echo", index) for index in range(64))
        results = await collect(settings, ids)
    sizes = [r.batch_size for r in results.values()]
    assert max(sizes) > 1 and max(sizes) <= 16
    assert max(model.batch_sizes) <= 16 and sum(model.batch_sizes) == 64
    assert len(model.batch_sizes) < 64


async def test_a_lone_request_waits_at_most_max_wait(settings: InferpoolSettings) -> None:
    settings = settings.model_copy(update={"max_batch_size": 64, "max_wait_ms": 100})
    async with (
        running_worker(settings, testing_models.RecordingEcho()),
        Producer(settings) as producer,
    ):
        request_id = await producer.submit("echo", "alone")
        result = (await collect(settings, [request_id]))[request_id]
    assert result.batch_size == 1
    # it waited for company (the batch was not full), but no longer than max_wait_ms + margin
    assert 90 <= result.timings.batch_wait_ms <= 100 + 50


async def test_expired_requests_are_answered_without_the_model(settings: InferpoolSettings) -> None:
    model = testing_models.RecordingEcho()
    async with running_worker(settings, model), Producer(settings) as producer:
        late = await producer.submit("echo", "late", deadline_ms=now_ms() - 1_000)
        fine = await producer.submit("echo", "fine", timeout_ms=60_000)
        results = await collect(settings, [late, fine])
    assert results[late].status is ResultStatus.EXPIRED
    assert results[late].error is not None and results[late].error.code == "expired"
    assert results[fine].status is ResultStatus.OK
    assert model.calls == ["fine"]


async def test_one_failing_request_does_not_fail_its_batch(settings: InferpoolSettings) -> None:
    settings = settings.model_copy(update={"max_wait_ms": 200})
    async with (
        running_worker(settings, testing_models.ExplodingModel()),
        Producer(settings) as producer,
    ):
        inputs = ["a", "b", "boom", "c"]
        ids = await producer.submit_many(SubmitRequest("exploding", value) for value in inputs)
        results = await collect(settings, ids)
    by_input = dict(zip(inputs, (results[i] for i in ids), strict=True))
    boom = by_input.pop("boom")
    assert boom.status is ResultStatus.ERROR and boom.error is not None
    assert boom.error.code == "model_error" and "boom" in boom.error.message
    assert all(r.status is ResultStatus.OK for r in by_input.values())
    assert {r.outputs for r in by_input.values()} == {"a", "b", "c"}


async def test_tensors_travel_both_ways_in_both_encodings(settings: InferpoolSettings) -> None:
    import torch

    vector = torch.tensor([1.0, -2.0, 0.5, 3.0])
    async with running_worker(settings, testing_models.VectorModel()):
        ids = {}
        for encoding in Encoding:
            async with Producer(settings, encoding) as producer:
                ids[encoding] = await producer.submit("vector", WireTensor.from_torch(vector))
        results = await collect(settings, ids.values())
    for request_id in ids.values():
        output = results[request_id].outputs
        assert isinstance(output, WireTensor)
        assert torch.equal(output.to_torch(), vector * 2)


async def test_results_carry_model_and_timings(settings: InferpoolSettings) -> None:
    async with (
        running_worker(settings, testing_models.RecordingEcho()),
        Producer(settings) as producer,
    ):
        before = now_ms()
        request_id = await producer.submit("echo", 1, traceparent=TRACEPARENT)
        result = (await collect(settings, [request_id]))[request_id]
    assert result.model == "echo" and result.model_version == "rec-1"
    assert result.trace == TRACEPARENT
    assert result.finished_ms >= before
    assert 0 <= result.timings.end_to_end_ms <= now_ms() - before
    assert result.timings.inference_ms >= 0


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_an_output_that_cannot_be_encoded_becomes_an_error(
    settings: InferpoolSettings,
) -> None:
    async with running_worker(settings, testing_models.NanModel()):
        async with Producer(settings, Encoding.JSON) as producer:
            bad = await producer.submit("nan", "nan")
            good = await producer.submit("nan", "fine")
        results = await collect(settings, [bad, good])
    assert results[bad].status is ResultStatus.ERROR
    assert results[bad].error is not None and results[bad].error.code == "invalid_output"
    assert results[good].status is ResultStatus.OK and results[good].outputs == "fine"
