"""CUDA paths: device selection, pinned non-blocking copies, fp16 / bf16 / int8 weight-only.

They skip without CUDA (CI has none); run them on a GPU machine with
``pytest tests/gpu -m gpu``."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from worker.models import minilm
from worker.models.calibration import sentences
from worker.models.precision import Precision
from worker.models.quantization import agreement

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def embed(model: minilm.TextEmbeddingModel, texts: list[str]) -> torch.Tensor:
    items = model.prepare(texts)
    return torch.cat([model.forward(model.collate(items[i : i + 32]))
                      for i in range(0, len(items), 32)])


def test_auto_picks_cuda_and_fp16() -> None:
    model = minilm.create(warmup_batch_sizes=(1, 8))
    assert model.device.type == "cuda"
    assert model.precision is Precision.FP16


def test_batches_are_pinned_and_copied_without_blocking() -> None:
    model = minilm.create(precision=Precision.FP16, warmup_batch_sizes=())
    batch = model.collate(model.prepare(["pinned memory", "non-blocking copy"]))
    assert all(tensor.device.type == "cuda" for tensor in batch.values())
    output = model.forward(batch)
    assert output.device.type == "cpu" and output.shape == (2, 384)


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.BF16])
def test_half_precisions_agree_with_fp32_on_cpu(precision: Precision) -> None:
    texts = sentences(200, seed=2025)
    reference = embed(minilm.create(precision=Precision.NONE, device="cpu",
                                    warmup_batch_sizes=()), texts)
    model = minilm.create(precision=precision, device="cuda", warmup_batch_sizes=())
    assert model.precision is precision
    measured = agreement(reference, embed(model, texts))
    assert measured.mean_cosine >= 0.999 and measured.min_cosine >= 0.99


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="needs torchao")
def test_int8_weight_only_on_cuda() -> None:
    model = minilm.create(precision=Precision.INT8_WEIGHT_ONLY, device="cuda",
                          warmup_batch_sizes=())
    assert model.precision is Precision.INT8_WEIGHT_ONLY, model.choice.refused
