"""Generative models through the pool: SmolLM2-135M (the real model, fp32, loaded once for
the module), one in-process worker per test against the real broker and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pool_helpers import reader_for, running_worker

from inferpool.protocol import ResultRecord, ResultStatus, now_ms
from inferpool.protocol.generation import EntryType, FinishReason, StreamEntry
from inferpool.settings import InferpoolSettings
from producer.client import Producer
from worker.models.config import ModelConfig
from worker.models.generative.model import GenerativeModel
from worker.models.registry import load_model

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
#: A raw prompt the model goes on continuing (no end token comes for a long while).
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
LONG = {"raw": True, "max_new_tokens": 256}


@pytest.fixture(scope="module")
def smollm2() -> Iterator[GenerativeModel]:
    config = ModelConfig(
        name="smollm2", loader="smollm2", quantization="none",
        options={"max_running": 4, "max_new_tokens": 256, "max_prompt_tokens": 256},
    )
    model = load_model(config)
    assert isinstance(model, GenerativeModel)
    yield model


async def _follow(settings: InferpoolSettings, request_id: str, timeout_s: float = 60.0) -> tuple[
    list[StreamEntry], ResultRecord
]:
    entries: list[StreamEntry] = []
    async with reader_for(settings) as reader:
        async for item in reader.stream(request_id, timeout_s):
            if isinstance(item, ResultRecord):
                return entries, item
            entries.append(item)
    raise AssertionError("the stream ended without a result")


async def _first_tokens(settings: InferpoolSettings, request_id: str) -> float:
    """When the request's first tokens entry was read (event-loop time)."""
    async with reader_for(settings) as reader:
        while True:
            items = await reader.read_stream(request_id, "0", 1.0)
            if any(entry.type is EntryType.TOKENS for _, entry in items):
                return asyncio.get_running_loop().time()


async def test_streamed_deltas_are_the_greedy_answer(
    settings: InferpoolSettings, smollm2: GenerativeModel
) -> None:
    async with running_worker(settings, smollm2), Producer(settings) as producer:
        request_id = await producer.submit(
            "smollm2", QUESTION, params={"max_new_tokens": 24}, timeout_ms=120_000
        )
        entries, result = await _follow(settings, request_id)
        late, late_result = await _follow(settings, request_id)  # a late reader
    assert result.status is ResultStatus.OK
    output = result.outputs
    tokens = [e for e in entries if e.type is EntryType.TOKENS]
    assert "".join(e.text for e in tokens) == output["text"]
    assert [e.seq for e in tokens] == list(range(len(tokens)))
    assert sum(e.tokens for e in tokens) == output["completion_tokens"] > 1
    assert late == entries and late_result == result
    assert "Paris" in output["text"]
    expected = smollm2.reference_greedy(smollm2.chat_ids(QUESTION), 24)
    assert smollm2.tokenizer.decode(expected, skip_special_tokens=True) == output["text"]
    assert output["finish_reason"] in (FinishReason.STOP, FinishReason.LENGTH)
    assert output["time_to_first_token_ms"] > 0 and output["tokens_per_s"] > 0


async def test_a_second_request_joins_the_running_batch(
    settings: InferpoolSettings, smollm2: GenerativeModel
) -> None:
    async with running_worker(settings, smollm2), Producer(settings) as producer:
        first = await producer.submit("smollm2", COUNTING, params={"raw": True,
                                      "max_new_tokens": 64}, timeout_ms=120_000)
        await _first_tokens(settings, first)
        second = await producer.submit("smollm2", QUESTION, params={"max_new_tokens": 8},
                                       timeout_ms=120_000)
        joined = await _first_tokens(settings, second)
        async with reader_for(settings) as reader:
            assert (await reader.get(first)).record is None  # still running when it joined
            results = {r.id: r for r in [await reader.wait(i, 120) for i in (first, second)]}
    assert joined > 0
    assert results[second].finished_ms < results[first].finished_ms
    assert results[second].batch_size == 2


async def test_deadline_and_cancel_stop_a_generation_mid_way(
    settings: InferpoolSettings, smollm2: GenerativeModel
) -> None:
    params, prompt = LONG, COUNTING
    async with running_worker(settings, smollm2), Producer(settings) as producer:
        cancelled = await producer.submit("smollm2", prompt, params=params, timeout_ms=120_000)
        await _first_tokens(settings, cancelled)
        async with reader_for(settings) as reader:
            await reader.request_cancel(cancelled)
        _, cancel_result = await _follow(settings, cancelled)
        late = await producer.submit("smollm2", prompt, params=params,
                                     deadline_ms=now_ms() + 3_000)
        _, deadline_result = await _follow(settings, late)
        expired = await producer.submit("smollm2", prompt, params=params,
                                        deadline_ms=now_ms() - 1_000)
        _, expired_result = await _follow(settings, expired)
    assert cancel_result.outputs["finish_reason"] == FinishReason.CANCELLED
    assert 0 < cancel_result.outputs["completion_tokens"] < 256
    assert deadline_result.outputs["finish_reason"] == FinishReason.DEADLINE
    assert 0 < deadline_result.outputs["completion_tokens"] < 256
    assert deadline_result.outputs["text"]
    assert expired_result.status is ResultStatus.EXPIRED
