"""int8 MiniLM against fp32, and the guard that refuses a quantized model below the floor."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from inferpool.errors import ConfigurationError
from worker.models import minilm
from worker.models.calibration import sentences
from worker.models.precision import AccuracyFloor, Precision, choose
from worker.models.quantization import agreement
from worker.models.text_embedding import TextEmbeddingModel, calibration_texts

pytestmark = pytest.mark.slow

EVALUATION_SEED = 2025  # not the calibration (7) or check (8) sets


@pytest.fixture(scope="module")
def model() -> TextEmbeddingModel:
    torch.set_num_threads(2)
    return minilm.create(precision=Precision.INT8, warmup_batch_sizes=())


def embed(model: TextEmbeddingModel, module: nn.Module, texts: list[str]) -> torch.Tensor:
    items = model.prepare(texts)
    return torch.cat([model.encode(module, model.collate(items[i : i + 64]))
                      for i in range(0, len(items), 64)])


def test_int8_is_the_cpu_default_and_agrees_with_fp32(model: TextEmbeddingModel) -> None:
    assert minilm.create(warmup_batch_sizes=()).precision is Precision.INT8  # auto on CPU
    assert model.precision is Precision.INT8 and model.choice.refused == ()
    texts = sentences(256, seed=EVALUATION_SEED)
    fp32 = embed(model, model.build_encoder(Precision.NONE), texts)
    measured = agreement(fp32, embed(model, model.encoder, texts))
    assert measured.mean_cosine >= 0.99
    assert measured.min_cosine >= 0.97


def test_the_guard_refuses_a_damaged_quantization(model: TextEmbeddingModel) -> None:
    def load(mode: Precision) -> nn.Module:
        module = model.build_encoder(Precision.NONE)
        if mode is Precision.NONE:
            return module
        damaged = copy.deepcopy(module)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in damaged.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
        return damaged

    texts = sentences(64, seed=EVALUATION_SEED)
    choice, chosen = choose([Precision.INT8, Precision.NONE], load,
                            lambda module: embed(model, module, texts), AccuracyFloor())
    assert choice.precision is Precision.NONE
    assert [mode for mode, _ in choice.refused] == [Precision.INT8]
    assert "below the floor" in choice.refused[0][1]
    assert chosen is model.build_encoder(Precision.NONE)


def test_stock_dynamic_quantization_is_refused_and_fp32_served() -> None:
    stock = {"smooth_layers": (), "activation_bits": 7}  # plain quantize_dynamic, per-channel
    model = minilm.create(precision=Precision.INT8, int8_options=stock, warmup_batch_sizes=())
    assert model.precision is Precision.NONE
    assert model.choice.refused[0][0] is Precision.INT8
    assert "below the floor" in model.choice.refused[0][1]


def test_an_unavailable_mode_is_refused_not_fatal() -> None:
    model = minilm.create(precision=Precision.FP16, warmup_batch_sizes=())
    # fp16 on this CPU is slow but available; int8-weight-only needs CUDA and is refused
    assert model.precision in (Precision.FP16, Precision.BF16, Precision.NONE)
    weight_only = minilm.create(precision=Precision.INT8_WEIGHT_ONLY, warmup_batch_sizes=())
    assert weight_only.choice.refused[0][0] is Precision.INT8_WEIGHT_ONLY
    assert "unavailable here" in weight_only.choice.refused[0][1]


def test_int8_can_be_calibrated_on_texts_like_the_traffic(tmp_path: Path) -> None:
    code_lines = [f"def handler_{i}(request): return json.dumps({{'id': {i}, 'ok': True}})"
                  for i in range(24)]
    prose = sentences(24, seed=99)
    path = tmp_path / "calibration.txt"
    path.write_text("\n".join(line for pair in zip(code_lines, prose, strict=True)
                              for line in pair))
    calibration, check = calibration_texts(path)
    assert len(calibration) == 36 and code_lines[0] in calibration
    assert prose[1] in check and prose[1] not in calibration  # the 4th line is held out
    model = minilm.create(precision=Precision.INT8, calibration_file=path, warmup_batch_sizes=())
    # the guard judged the calibrated model on held-out traffic-like texts too
    assert model.precision is Precision.INT8 or "below the floor" in model.choice.refused[0][1]
    with pytest.raises(ConfigurationError, match="at least 16"):
        (tmp_path / "short.txt").write_text("one\ntwo\n")
        minilm.create(calibration_file=tmp_path / "short.txt", warmup_batch_sizes=())
