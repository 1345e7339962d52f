"""Int8 with fp32 outlier channels, on single layers and on a tiny seeded random BERT."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from worker.models import quantization as q
from worker.models.outlier_int8 import (
    WEIGHT_MAX,
    OutlierInt8Linear,
    choose_outliers,
    quantize_outlier_int8,
)

transformers = pytest.importorskip("transformers")

VOCAB = 120
SEQUENCE = 12


def _batch(generator: torch.Generator, rows: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (rows, SEQUENCE), generator=generator)
    lengths = torch.randint(2, SEQUENCE + 1, (rows,), generator=generator)
    mask = (torch.arange(SEQUENCE).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


@pytest.fixture(scope="module")
def tiny_bert() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=256,
                                     max_position_embeddings=32)
    model: nn.Module = transformers.BertModel(config).eval()
    return model


def test_outlier_channels_are_multiplied_in_fp32_and_the_rest_in_int8() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(32, 8)
    x = torch.randn(64, 32)
    x[:, 5] *= 40.0  # one channel far outside the others' range
    outliers = choose_outliers(x.abs().amax(dim=0), 2)
    assert 5 in outliers.tolist()
    rest = x.index_fill(1, outliers, 0.0)
    layer = OutlierInt8Linear(linear, outliers, float(rest.min()), float(rest.max()))
    with torch.no_grad():
        expected = linear(x)
        # only outlier inputs: the int8 part sees zeros and contributes the bias alone
        only_outliers = x - rest
        exact = linear(only_outliers)
        assert torch.allclose(layer(only_outliers), exact, atol=1e-5)
        error = (layer(x) - expected).abs().max() / expected.abs().max()
        plain = OutlierInt8Linear(linear, outliers[:0], float(x.min()), float(x.max()))
        plain_error = (plain(x) - expected).abs().max() / expected.abs().max()
    assert error < 0.02 and error < plain_error / 4
    qweight = torch.ops.quantized.linear_unpack(layer._packed)[0].int_repr()
    assert int(qweight.abs().max()) <= WEIGHT_MAX and (qweight[:, outliers] == 0).all()
    low, high = layer.input_range
    step = layer.input_scale  # the zero point is rounded: the range moves by < 1 step
    assert abs(low - float(rest.min())) < step and abs(high - float(rest.max())) < step


def test_every_linear_is_quantized_and_agrees_with_fp32(tiny_bert: nn.Module) -> None:
    generator = torch.Generator().manual_seed(2)
    calibration = [_batch(generator, 16) for _ in range(2)]
    evaluation = [_batch(generator, 16) for _ in range(2)]
    quantized = quantize_outlier_int8(tiny_bert, calibration, outliers=4)
    linears = [m for m in quantized.modules() if isinstance(m, nn.Linear)]
    replaced = [m for m in quantized.modules() if isinstance(m, OutlierInt8Linear)]
    assert linears == [] and len(replaced) == 13  # 2 x (q, k, v, attn out, ffn in, out) + pooler
    assert all(m.outlier_index.numel() == 4 for m in replaced)
    assert not any(isinstance(m, OutlierInt8Linear) for m in tiny_bert.modules())  # untouched
    result = q.agreement(q.embed(tiny_bert, evaluation), q.embed(quantized, evaluation))
    assert result.mean_cosine > 0.995 and result.min_cosine > 0.98
    with pytest.raises(ValueError, match="outliers must be >= 0"):
        quantize_outlier_int8(tiny_bert, calibration, outliers=-1)


def test_a_row_is_the_same_alone_and_in_a_padded_batch(tiny_bert: nn.Module) -> None:
    generator = torch.Generator().manual_seed(3)
    quantized = quantize_outlier_int8(tiny_bert, [_batch(generator, 16)])
    batch = _batch(generator, 16)
    together = q.embed(quantized, [batch])
    for row in range(16):
        length = int(batch["attention_mask"][row].sum())
        alone = {k: v[row : row + 1, :length] for k, v in batch.items()}
        cosine = float((q.embed(quantized, [alone])[0] * together[row]).sum())
        assert cosine >= 0.99999, (row, cosine)


def test_unpadded_attention_matches_masked_attention_and_falls_back_on_other_masks(
    tiny_bert: nn.Module,
) -> None:
    import copy

    from worker.models.invariant_attention import _right_padded_lengths, use_invariant_attention

    generator = torch.Generator().manual_seed(4)
    batch = _batch(generator, 8)
    unpadded = copy.deepcopy(tiny_bert)
    use_invariant_attention(unpadded)
    with torch.inference_mode():
        masked = q.embed(tiny_bert, [batch])
        cut = q.embed(unpadded, [batch])
    assert torch.allclose(masked, cut, atol=1e-5)
    right = torch.tensor([[True, True, False], [True, True, True]])
    as_4d = right[:, None, None, :].expand(2, 1, 3, 3)
    assert _right_padded_lengths(as_4d, 2, 3) == [2, 3]
    assert _right_padded_lengths(None, 2, 3) == [3, 3]
    left = torch.tensor([[False, True, True], [True, True, True]])[:, None, None, :]
    assert _right_padded_lengths(left.expand(2, 1, 3, 3), 2, 3) is None
    with pytest.raises(TypeError, match="pluggable attention"):
        use_invariant_attention(nn.Linear(2, 2))
