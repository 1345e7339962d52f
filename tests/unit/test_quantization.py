"""Int8 quantization of a BERT-like encoder: a tiny seeded random BERT stands in for MiniLM."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from worker.models import quantization as q

transformers = pytest.importorskip("transformers")

VOCAB = 120
SEQUENCE = 12


def _batch(generator: torch.Generator, rows: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (rows, SEQUENCE), generator=generator)
    lengths = torch.randint(SEQUENCE // 2, SEQUENCE + 1, (rows,), generator=generator)
    mask = (torch.arange(SEQUENCE).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return {
        "input_ids": ids * mask,
        "attention_mask": mask,
        "token_type_ids": torch.zeros_like(ids),
    }


@pytest.fixture(scope="module")
def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=32,
    )
    model: nn.Module = transformers.BertModel(config).eval()
    return model


@pytest.fixture(scope="module")
def batches() -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(1)
    calibration = [_batch(generator, 8) for _ in range(2)]
    evaluation = [_batch(generator, 16) for _ in range(2)]
    return calibration, evaluation


Batches = tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]


def _linear_types(model: nn.Module) -> dict[str, type[nn.Module]]:
    return {
        name: type(module)
        for name, module in model.named_modules()
        if name.endswith(("query", "key", "value", "dense", "dense.linear"))
    }


def test_default_recipe_agrees_with_fp32_and_quantizes_every_linear(
    tiny_bert: nn.Module, batches: Batches
) -> None:
    calibration, evaluation = batches
    quantized = q.quantize_int8(tiny_bert, calibration)

    result = q.agreement(q.embed(tiny_bert, evaluation), q.embed(quantized, evaluation))
    assert result.mean_cosine > 0.99
    assert result.min_cosine > 0.97

    types = _linear_types(quantized)
    ffn_outputs = [f"encoder.layer.{i}.output.dense" for i in range(2)]
    for name in ffn_outputs:
        assert types[name] is q.SmoothedLinear
        assert types[f"{name}.linear"] is q.StaticRangeLinear
    others = [n for n in types if n not in ffn_outputs and not n.endswith(".linear")]
    assert len(others) == 2 * 5 + 1  # q, k, v, attention output, FFN input; the pooler
    assert all(types[name] is q.StaticRangeLinear for name in others)
    # No layer left in float.
    assert not any(isinstance(m, nn.Linear) for m in quantized.modules())


def _alone_and_padded(
    model: nn.Module, batch: dict[str, torch.Tensor], row: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embedding of ``row`` alone (no padding) and inside ``batch`` padded to twice its length."""
    length = int(batch["attention_mask"][row].sum())
    alone = {k: v[row : row + 1, :length] for k, v in batch.items()}
    padded = {k: nn.functional.pad(v, (0, SEQUENCE)) for k, v in batch.items()}
    return q.embed(model, [alone])[0], q.embed(model, [padded])[row]


def test_static_ranges_make_rows_independent_of_their_batch(
    tiny_bert: nn.Module, batches: Batches
) -> None:
    import copy

    calibration, evaluation = batches
    model = copy.deepcopy(tiny_bert)
    with torch.no_grad():  # token 7: a spiky embedding, far outside the usual input range
        embeddings: Any = model.get_submodule("embeddings.word_embeddings")
        embeddings.weight[7] = nn.functional.one_hot(torch.tensor(3), 64).float() * 10.0
    batch = {k: v.clone() for k, v in evaluation[0].items()}
    batch["input_ids"][0] = 7  # row 0: all outliers; it must not change the other rows
    batch["attention_mask"][0] = 1
    invariant = q.quantize_int8(model, calibration)
    dynamic = q.quantize_int8(model, calibration, activation_ranges="dynamic")
    static_gap = dynamic_gap = 0.0
    for row in range(1, 16):
        alone, batched = _alone_and_padded(invariant, batch, row)
        static_gap = max(static_gap, float((alone - batched).abs().max()))
        alone, batched = _alone_and_padded(dynamic, batch, row)
        dynamic_gap = max(dynamic_gap, float((alone - batched).abs().max()))
    assert static_gap < 1e-6  # float rounding only
    assert dynamic_gap > 1e-4  # a per-call scale makes rows depend on their batch


def test_static_range_linear_quantizes_each_row_with_the_calibrated_scale() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(32, 8)
    dynamic = q.quantize_int8(
        nn.Sequential(linear), [], smooth_layers=(), activation_ranges="dynamic"
    ).get_submodule("0")
    assert isinstance(dynamic, q.FullRangeDynamicLinear)
    for quant_max in (255, 127):
        static = q.StaticRangeLinear.from_dynamic(dynamic, -1.0, 3.0, quant_max)
        low, high = static.input_range
        assert low <= -1.0 + static.input_scale and high >= 3.0 - static.input_scale
        x = torch.randn(5, 32) * 2
        scale, zero_point = static.input_scale, static.input_zero_point
        codes = (torch.round(x / scale) + zero_point).clamp(0, quant_max)
        weight: Any = dynamic.weight  # untyped in torch.ao
        bias: Any = dynamic.bias
        expected = ((codes - zero_point) * scale) @ weight().dequantize().T + bias()
        torch.testing.assert_close(static(x), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(static(x[2:3]), static(x)[2:3], atol=0, rtol=0)


def test_full_range_weights_stay_within_seven_bits(tiny_bert: nn.Module, batches: Batches) -> None:
    quantized = q.quantize_int8(tiny_bert, batches[0], smooth_layers=())
    for module in quantized.modules():
        if isinstance(module, q.FullRangeDynamicLinear):
            packed_weight: Any = module.weight  # untyped in torch.ao
            weights = packed_weight().int_repr()
            assert int(weights.min()) >= -64
            assert int(weights.max()) <= 63


def test_stock_kernel_keep_fp32_and_input_model_untouched(
    tiny_bert: nn.Module, batches: Batches
) -> None:
    calibration, evaluation = batches
    before = {k: v.clone() for k, v in tiny_bert.state_dict().items()}
    quantized = q.quantize_int8(
        tiny_bert,
        calibration,
        smooth_layers=q.ENCODER_LINEARS,
        keep_fp32=(r"layer\.0\.output\.dense$",),
        activation_bits=7,
        activation_ranges="dynamic",
    )
    types = _linear_types(quantized)
    assert types["encoder.layer.0.output.dense"] is nn.Linear
    assert types["encoder.layer.1.output.dense"] is q.SmoothedLinear
    assert types["encoder.layer.1.output.dense.linear"] is torch.ao.nn.quantized.dynamic.Linear
    assert types["encoder.layer.0.attention.self.query"] is q.SmoothedLinear

    result = q.agreement(q.embed(tiny_bert, evaluation), q.embed(quantized, evaluation))
    assert result.mean_cosine > 0.99

    after = tiny_bert.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_smoothing_alone_is_exact_in_float(tiny_bert: nn.Module, batches: Batches) -> None:
    calibration, evaluation = batches
    import copy

    smoothed = copy.deepcopy(tiny_bert)
    names = [f"encoder.layer.{i}.output.dense" for i in range(2)]
    q.smooth(smoothed, q.collect_input_absmax(smoothed, calibration, names), alpha=0.8)
    assert all(isinstance(smoothed.get_submodule(n), q.SmoothedLinear) for n in names)
    torch.testing.assert_close(
        q.embed(smoothed, evaluation), q.embed(tiny_bert, evaluation), atol=1e-5, rtol=1e-4
    )


def test_smoothing_scale_follows_the_formula() -> None:
    activation = torch.tensor([4.0, 1.0, 9.0])
    weight = torch.tensor([[1.0, -2.0, 0.5], [-0.25, 1.0, -1.0]])
    scale = q.smoothing_scale(activation, weight, alpha=0.5)
    torch.testing.assert_close(scale, torch.tensor([2.0 / 1.0, 1.0 / math.sqrt(2.0), 3.0]))
    with pytest.raises(ValueError, match="alpha"):
        q.smoothing_scale(activation, weight, alpha=1.5)


def test_agreement_on_hand_made_embeddings() -> None:
    eye = torch.eye(3)
    same = q.agreement(eye, eye.clone())
    assert same.mean_cosine == pytest.approx(1.0)
    assert same.min_cosine == pytest.approx(1.0)

    # Each row rotated onto the next axis: orthogonal to the reference row.
    orthogonal = q.agreement(eye, eye[[1, 2, 0]])
    assert orthogonal.mean_cosine == pytest.approx(0.0)
    assert orthogonal.min_cosine == pytest.approx(0.0)

    half = math.sqrt(0.5)
    reference = torch.tensor([[1.0, 0.0], [half, half], [0.0, 1.0], [-1.0, 0.0]])
    candidate = torch.tensor([[1.0, 0.0], [half, half], [0.0, 1.0], [0.0, -1.0]])
    result = q.agreement(reference, candidate)
    assert result.mean_cosine == pytest.approx(0.75)
    assert result.min_cosine == pytest.approx(0.0)
    # Nearest other row: reference 0→1, 1→0 (tie with 2: first wins), 2→1, 3→2;
    # candidate 0→1, 1→0, 2→1, 3→0. Three of four agree.
    assert result.nearest_neighbour_agreement == pytest.approx(0.75)


def test_agreement_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        q.agreement(torch.eye(3), torch.eye(2))
