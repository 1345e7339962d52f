"""CUDA paths of generative models: fp16 (auto) and bf16 through the accuracy guard, the
slot cache on the device, and greedy tokens through it equal to ``generate()``'s.

They skip without CUDA (CI has none); run them on a GPU machine with
``pytest tests/gpu -m gpu``."""

from __future__ import annotations

import pytest
import torch

from worker.models.config import ModelConfig
from worker.models.generative.greedy import greedy_continuations
from worker.models.generative.model import GenerativeModel
from worker.models.precision import Precision
from worker.models.registry import load_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def smollm2(precision: str) -> GenerativeModel:
    config = ModelConfig(name="smollm2", loader="smollm2", quantization=precision,
                         options={"max_running": 8, "max_new_tokens": 32})
    model = load_model(config)
    assert isinstance(model, GenerativeModel)
    return model


@pytest.mark.parametrize(("requested", "served"), [("auto", Precision.FP16),
                                                   ("bf16", Precision.BF16)])
def test_reduced_precisions_pass_the_guard_on_cuda(requested: str, served: Precision) -> None:
    model = smollm2(requested)
    assert model.device.type == "cuda"
    assert model.choice.precision is served, model.choice.refused
    assert model.choice.figures is not None and model.choice.figures.top1_agreement >= 0.95
    cache = model.new_cache(2)
    assert cache.keys[0].device.type == "cuda" and cache.dtype == model.dtype


def test_greedy_through_the_cache_equals_generate_on_cuda() -> None:
    model = smollm2("auto")
    prompt = model.chat_ids("What is the capital of France?")
    ours = greedy_continuations(model.hf_model, [prompt], 16, model.end_ids, model.pad_id,
                                model.dtype, model.device)[0]
    expected = model.reference_greedy(prompt, 16)
    assert [t for t in ours if t not in model.end_ids] == expected
