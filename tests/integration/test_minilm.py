"""MiniLM served by the pool: embeddings equal a direct in-process call of the same model
and mode; bad texts get the documented results."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from pool_helpers import collect, running_worker

from inferpool.protocol import ResultStatus
from inferpool.protocol.wire import WireTensor
from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest
from worker.models import minilm
from worker.models.calibration import sentences
from worker.models.text_embedding import TextEmbeddingModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model() -> Iterator[TextEmbeddingModel]:
    torch.set_num_threads(2)
    yield minilm.create(max_sequence_length=32, max_input_bytes=4096)


def direct(model: TextEmbeddingModel, texts: list[str]) -> torch.Tensor:
    return model.forward(model.collate(model.prepare(texts)))


async def test_pool_embeddings_equal_a_direct_call(
    settings: InferpoolSettings, model: TextEmbeddingModel
) -> None:
    texts = [*sentences(40, seed=11), "short", "two words", "a " * 20 + "longer one"]
    settings = settings.model_copy(update={"max_batch_size": 16, "max_wait_ms": 20})
    async with running_worker(settings, model), Producer(settings) as producer:
        ids = await producer.submit_many(SubmitRequest("minilm", text) for text in texts)
        results = await collect(settings, ids, timeout_s=60)
    served = []
    for request_id in ids:
        output = results[request_id].outputs
        assert results[request_id].status is ResultStatus.OK
        assert isinstance(output, WireTensor)
        assert output.dtype == "float32" and output.shape == (384,)
        served.append(output.to_torch())
    expected = torch.cat([direct(model, [text]) for text in texts])
    cosines = torch.nn.functional.cosine_similarity(torch.stack(served), expected)
    assert cosines.min().item() >= 0.9999
    assert max(r.batch_size for r in results.values()) > 1
    assert {r.model_version for r in results.values()} == {minilm.VERSION}


async def test_bad_texts_get_the_documented_results(
    settings: InferpoolSettings, model: TextEmbeddingModel
) -> None:
    long_text = " ".join(["word"] * 200)  # > 32 tokens: truncated, still answered
    cases = {
        "empty": ("", "invalid_input"),
        "blank": ("   ", "invalid_input"),
        "number": (42, "invalid_input"),
        "list": (["a", "b"], "invalid_input"),
        "huge": ("x" * 5000, "invalid_input"),
        "long": (long_text, None),
    }
    async with running_worker(settings, model), Producer(settings) as producer:
        ids = {name: await producer.submit("minilm", value) for name, (value, _) in cases.items()}
        unknown = await producer.submit("no-such-model", "text")
        results = await collect(settings, [*ids.values(), unknown])
    for name, (_, code) in cases.items():
        result = results[ids[name]]
        if code is None:
            assert result.status is ResultStatus.OK, name
        else:
            assert result.status is ResultStatus.ERROR and result.error is not None, name
            assert result.error.code == code, name
    assert results[unknown].error is not None and results[unknown].error.code == "unknown_model"
    # the long text was truncated to max_sequence_length tokens, as documented
    truncated = model.prepare([long_text])[0]
    assert len(truncated) == 32
    output = results[ids["long"]].outputs
    assert isinstance(output, WireTensor)
    cosine = torch.nn.functional.cosine_similarity(
        output.to_torch().unsqueeze(0), model.forward(model.collate([truncated]))
    )
    assert cosine.item() >= 0.9999
