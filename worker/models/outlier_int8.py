"""Int8 with outlier channels kept in fp32: the CPU int8 recipe for BERT-like encoders.

LLM.int8()-style decomposition, with the columns chosen statically: for every
``nn.Linear`` the ``outliers`` input channels with the largest ``max |x|`` on the
calibration texts are multiplied in fp32 (``x[:, idx] @ W[:, idx].T``, a thin GEMM added
in place to the int8 output); the weight's other columns are quantized per output channel
to 7 bits (``[-63, 63]``, so AVX2's 16-bit pair sums cannot saturate with 8-bit
activations) and the input to 8 bits with one fixed, calibrated range measured over the
non-outlier channels only. Without the few huge channels (BERT's LayerNorm outputs carry
values ~25x the median channel's, on a handful of dimensions, and they are what makes
short texts lose most) that range is tight, so the int8 part is precise on every kind of
text the calibration set covers.

The fixed range makes every row's quantization independent of its batch neighbours and
of padding (batch invariance); the fused fbgemm op
``quantized::linear_with_input_q_dq_qweight_dq_output_fp32`` quantizes, multiplies and
dequantizes with no Python per row. The outlier columns' input values saturate in the
int8 part, where their weights are zero, so they contribute only through the fp32 path.
Attention runs on each sequence's real tokens (``worker.models.invariant_attention``) so
that last-bit differences between batch shapes cannot flip int8 roundings.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from worker.models.invariant_attention import use_invariant_attention
from worker.models.quantization import _observe_inputs, _set_submodule

__all__ = ["OutlierInt8Linear", "choose_outliers", "quantize_outlier_int8"]

WEIGHT_MAX = 63  # 7-bit weights: 255 * 63 * 2 < 2**15, safe for vpmaddubsw's int16 sums
INPUT_MAX = 255  # 8-bit (unsigned) activations


def _quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8 in ``[-WEIGHT_MAX, WEIGHT_MAX]``."""
    scale = (weight.abs().amax(dim=1) / WEIGHT_MAX).clamp(min=1e-8).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized tensors are "deprecated"
        return torch.quantize_per_channel(
            weight, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8
        )


class OutlierInt8Linear(nn.Module):
    """``x @ W.T + b`` as int8 (non-outlier channels, static input range) + fp32 (outliers)."""

    outlier_index: torch.Tensor
    outlier_weight: torch.Tensor

    def __init__(
        self, linear: nn.Linear, outliers: torch.Tensor, input_min: float, input_max: float
    ) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        outliers = outliers.to(torch.long).sort().values
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("outlier_index", outliers)
        self.register_buffer("outlier_weight", weight[:, outliers].T.contiguous())  # [k, out]
        int8_part = weight.clone()
        int8_part[:, outliers] = 0.0
        bias = None if linear.bias is None else linear.bias.detach().float()
        self._packed = torch.ops.quantized.linear_prepack(_quantize_weight(int8_part), bias)
        low, high = min(float(input_min), 0.0), max(float(input_max), 0.0)
        self.input_scale = max(high - low, 1e-8) / INPUT_MAX
        self.input_zero_point = min(INPUT_MAX, max(0, round(-low / self.input_scale)))

    @property
    def input_range(self) -> tuple[float, float]:
        """The representable range of the non-outlier inputs; values outside it saturate."""
        low = -self.input_zero_point * self.input_scale
        return low, (INPUT_MAX - self.input_zero_point) * self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        out: torch.Tensor = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            x, self.input_scale, self.input_zero_point, self._packed
        )
        if self.outlier_index.numel():
            rows = x.reshape(-1, self.in_features).index_select(1, self.outlier_index)
            out.view(-1, self.out_features).addmm_(rows, self.outlier_weight)
        return out

    def extra_repr(self) -> str:
        low, high = self.input_range
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"fp32_channels={self.outlier_index.tolist()}, "
                f"input_range=({low:.4g}, {high:.4g})")


def choose_outliers(absmax: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` input channels with the largest calibrated ``max |x|``."""
    return absmax.topk(min(count, absmax.numel())).indices.sort().values


def quantize_outlier_int8(
    model: nn.Module,
    calibration_batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    outliers: int = 8,
    invariant_attention: bool = True,
) -> nn.Module:
    """An int8 copy of ``model`` in which every ``nn.Linear`` is an ``OutlierInt8Linear``.

    ``calibration_batches`` (``model(**batch)`` keyword dicts, padded like traffic) choose
    each layer's ``outliers`` fp32 input channels and the range of the others. Use texts
    of every kind the model will see, and never the evaluation set. The input model is
    left untouched. ``invariant_attention`` (Hugging Face models) makes the result
    batch-invariant (see ``worker.models.invariant_attention``).
    """
    if outliers < 0:
        raise ValueError(f"outliers must be >= 0, got {outliers}")
    batches = list(calibration_batches)
    quantized = copy.deepcopy(model).eval()
    names = [name for name, module in quantized.named_modules() if isinstance(module, nn.Linear)]
    # one pass: per input channel, min and max (the outliers are the largest |x|; the
    # others' range is taken over the remaining channels)
    low: dict[str, torch.Tensor] = {}
    high: dict[str, torch.Tensor] = {}

    def track(name: str, x: torch.Tensor) -> None:
        channel_min, channel_max = torch.aminmax(x, dim=0)
        if name in low:
            channel_min = torch.minimum(low[name], channel_min)
            channel_max = torch.maximum(high[name], channel_max)
        low[name], high[name] = channel_min, channel_max

    _observe_inputs(quantized, batches, names, track)
    chosen: dict[str, torch.Tensor] = {}
    ranges: dict[str, tuple[float, float]] = {}
    for name in names:
        chosen[name] = choose_outliers(torch.maximum(-low[name], high[name]), outliers)
        rest = torch.ones_like(low[name], dtype=torch.bool).index_fill(0, chosen[name], False)
        ranges[name] = float(low[name][rest].min()), float(high[name][rest].max())
    for name in names:
        linear: Any = quantized.get_submodule(name)
        _set_submodule(quantized, name, OutlierInt8Linear(linear, chosen[name], *ranges[name]))
    if invariant_attention:
        use_invariant_attention(quantized)
    return quantized
