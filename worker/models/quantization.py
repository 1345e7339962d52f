"""Int8 CPU quantization for BERT-like sentence encoders: the SmoothQuant recipe.

No longer the default: it was tuned on template English and fails the diverse guard
(short texts down to min cosine 0.71); the default is ``worker.models.outlier_int8``. It
stays selectable (``int8_options = {recipe = "smoothquant"}``), and ``agreement``/``embed``
and the calibration hooks here are shared. The recipe measured best on template
sentences (``docs/quantization.md``, ``ops/bench/quantization_sweep.py``) is dynamic int8
quantization of every
``nn.Linear`` layer (``torch.ao.quantization.quantize_dynamic``, per-output-channel
weights) with two additions, both on by default in ``quantize_int8``:

* **SmoothQuant-style smoothing** of the layers whose inputs carry outlier channels (the
  FFN output ``1536 → 384`` in BERT): each input channel ``j`` is divided by
  ``s_j = max|X_j|**alpha / max|W_:,j|**(1 - alpha)`` (calibrated on a few batches) and the weight
  column multiplied by it, so the product is unchanged in exact arithmetic but the
  activation range the int8 quantizer sees is flattened. BERT is post-LayerNorm, so a
  layer's input also feeds a residual connection and the division cannot be folded into
  the preceding LayerNorm; it stays an explicit per-channel multiply (cheap next to the
  matmul).
* **Full-range activations**: ``quantize_dynamic`` quantizes activations to
  7 bits (``reduce_range=True``) so that AVX2's saturating 16-bit pair sums cannot
  overflow. ``activation_bits=8`` instead gives activations the full 8 bits and
  restricts the weights to 7 bits (``[-64, 63]``), which is just as overflow-safe
  (255 * 64 * 2 < 2**15) and much more accurate, because the activations, not the
  per-channel weights, are what loses precision. ``activation_bits=7`` keeps the stock
  kernel's 7-bit activations and 8-bit weights.
* **Static activation ranges** (batch invariance): a dynamic kernel picks the activation
  scale per call from the whole ``[batch x tokens, features]`` input, so a sentence's
  embedding depends on its batch neighbours and their padding (cosine down to 0.98).
  ``quantize_int8`` instead calibrates, per Linear, a fixed ``[min, max]`` of its input
  on the calibration batches and quantizes with that scale
  (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``: the same fbgemm GEMM,
  fp32 in and out; values outside the range saturate). Every row is then quantized on
  its own, and padding cannot affect real tokens. ``activation_ranges="dynamic"`` keeps
  the per-call scale (batch-dependent; for comparison).

Everything here is a pure function of its arguments: the input model is left untouched
and a quantized deep copy is returned.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "ATTENTION_OUTPUT",
    "ENCODER_LINEARS",
    "FFN_INPUT",
    "FFN_OUTPUT",
    "QKV",
    "Agreement",
    "FullRangeDynamicLinear",
    "SmoothedLinear",
    "StaticRangeLinear",
    "agreement",
    "collect_input_absmax",
    "collect_input_range",
    "embed",
    "fp32_gain_by_layer",
    "quantize_int8",
    "smooth",
    "smoothing_scale",
]

# Name patterns (``re.search`` against ``named_modules`` names) for HF ``BertModel``.
FFN_OUTPUT = r"(^|\.)layer\.\d+\.output\.dense$"
FFN_INPUT = r"(^|\.)layer\.\d+\.intermediate\.dense$"
QKV = r"(^|\.)layer\.\d+\.attention\.self\.(query|key|value)$"
ATTENTION_OUTPUT = r"(^|\.)layer\.\d+\.attention\.output\.dense$"
ENCODER_LINEARS = (QKV, ATTENTION_OUTPUT, FFN_INPUT, FFN_OUTPUT)

_ActivationBits = Literal[7, 8]
_ActivationRanges = Literal["static", "dynamic"]


@dataclass(frozen=True, slots=True)
class Agreement:
    """How closely two sets of L2-normalized embeddings agree, row by row."""

    mean_cosine: float
    min_cosine: float
    nearest_neighbour_agreement: float
    """Fraction of rows whose nearest other row (by cosine) is the same in both sets."""


def agreement(reference: torch.Tensor, candidate: torch.Tensor) -> Agreement:
    """Compare two ``[N, D]`` L2-normalized embedding matrices (same rows, same order)."""
    if reference.ndim != 2 or reference.shape != candidate.shape:
        raise ValueError(
            f"expected two [N, D] matrices of equal shape, got {tuple(reference.shape)} "
            f"and {tuple(candidate.shape)}"
        )
    if reference.shape[0] == 0:
        raise ValueError("cannot compare empty embedding matrices")
    ref = reference.detach().double()
    cand = candidate.detach().double()
    cosine = (ref * cand).sum(dim=-1)
    rows = ref.shape[0]
    if rows > 1:
        exclude_self = torch.eye(rows, dtype=torch.bool)
        ref_nn = (ref @ ref.T).masked_fill(exclude_self, float("-inf")).argmax(dim=1)
        cand_nn = (cand @ cand.T).masked_fill(exclude_self, float("-inf")).argmax(dim=1)
        nn_agreement = float((ref_nn == cand_nn).double().mean())
    else:
        nn_agreement = 1.0
    return Agreement(
        mean_cosine=float(cosine.mean()),
        min_cosine=float(cosine.min()),
        nearest_neighbour_agreement=nn_agreement,
    )


class SmoothedLinear(nn.Module):
    """``linear(x / s)`` where ``linear``'s weight columns were multiplied by ``s``.

    Equal to the original layer in exact arithmetic; the inner ``linear`` is what gets
    quantized.
    """

    inv_scale: torch.Tensor

    def __init__(self, linear: nn.Linear, scale: torch.Tensor) -> None:
        super().__init__()
        if scale.shape != (linear.in_features,):
            raise ValueError(f"scale must have shape ({linear.in_features},)")
        with torch.no_grad():
            linear.weight.mul_(scale.to(linear.weight.dtype).unsqueeze(0))
        self.linear = linear
        self.register_buffer("inv_scale", scale.reciprocal().to(linear.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x * self.inv_scale)
        return out


class FullRangeDynamicLinear(torch.ao.nn.quantized.dynamic.Linear):
    """Dynamic int8 Linear with 8-bit activations (``reduce_range=False``).

    Only safe when the weights lie in ``[-64, 63]``: ``quantize_int8`` guarantees it with
    a 7-bit weight observer.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.quantized.linear_dynamic(
            x, self._packed_params._packed_params, reduce_range=False
        )
        return out.to(x.dtype)

    def _get_name(self) -> str:
        return "FullRangeDynamicQuantizedLinear"


class StaticRangeLinear(FullRangeDynamicLinear):
    """Int8 Linear whose input is quantized with a fixed, calibrated scale and zero point.

    Each input row is quantized independently of the other rows, so the output of a row
    does not depend on what else is in the batch. Inputs outside the calibrated range
    saturate. With ``quant_max=127`` (7-bit activations, for 8-bit weights on AVX2) the
    input is clamped to the range first, so the quantized values stay in ``[0, 127]``.
    """

    input_scale: float
    input_zero_point: int
    quant_max: int

    @classmethod
    def from_dynamic(
        cls,
        module: torch.ao.nn.quantized.dynamic.Linear,
        input_min: float,
        input_max: float,
        quant_max: int = 255,
    ) -> StaticRangeLinear:
        """Reuse ``module``'s packed weights; quantize inputs to ``[min(input_min, 0),
        max(input_max, 0)]`` over ``[0, quant_max]``."""
        static = cls(module.in_features, module.out_features, dtype=torch.qint8)
        static._packed_params = module._packed_params
        low, high = min(float(input_min), 0.0), max(float(input_max), 0.0)
        static.input_scale = max(high - low, 1e-8) / quant_max
        static.input_zero_point = min(quant_max, max(0, round(-low / static.input_scale)))
        static.quant_max = quant_max
        return static

    @property
    def input_range(self) -> tuple[float, float]:
        """The representable input range; values outside it saturate."""
        low = -self.input_zero_point * self.input_scale
        return low, (self.quant_max - self.input_zero_point) * self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant_max < 255:
            x = x.clamp(*self.input_range)
        out: torch.Tensor = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            x.float(), self.input_scale, self.input_zero_point, self._packed_params._packed_params
        )
        return out.to(x.dtype)

    def _get_name(self) -> str:
        return "StaticRangeQuantizedLinear"

    def extra_repr(self) -> str:
        low, high = self.input_range
        base: Any = super().extra_repr
        return f"{base()}, input_range=({low:.4g}, {high:.4g})"


def _matching_linears(model: nn.Module, patterns: Sequence[str]) -> dict[str, nn.Linear]:
    compiled = [re.compile(pattern) for pattern in patterns]
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(p.search(name) for p in compiled)
    }


def _observe_inputs(
    model: nn.Module,
    calibration_batches: Iterable[Mapping[str, torch.Tensor]],
    names: Iterable[str],
    update: Any,
) -> None:
    """Run the batches through ``model``, calling ``update(name, x2d)`` with each named
    Linear layer's input reshaped to ``[rows, features]``."""
    modules = dict(model.named_modules())
    handles = []

    def observer(name: str) -> Any:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            update(name, x.reshape(-1, x.shape[-1]).float())

        return hook

    try:
        for name in names:
            module = modules.get(name)
            if not isinstance(module, nn.Linear):
                raise ValueError(f"{name!r} is not a Linear layer of the model")
            handles.append(module.register_forward_pre_hook(observer(name)))
        with torch.inference_mode():
            seen = 0
            for batch in calibration_batches:
                model(**batch)
                seen += 1
        if seen == 0:
            raise ValueError("calibration_batches is empty")
    finally:
        for handle in handles:
            handle.remove()


def collect_input_absmax(
    model: nn.Module,
    calibration_batches: Iterable[Mapping[str, torch.Tensor]],
    names: Iterable[str],
) -> dict[str, torch.Tensor]:
    """Per-input-channel ``max |x|`` of the named Linear layers over the calibration batches."""
    absmax: dict[str, torch.Tensor] = {}

    def update(name: str, x: torch.Tensor) -> None:
        current = x.abs().amax(dim=0)
        previous = absmax.get(name)
        absmax[name] = current if previous is None else torch.maximum(previous, current)

    _observe_inputs(model, calibration_batches, names, update)
    return absmax


def collect_input_range(
    model: nn.Module,
    calibration_batches: Iterable[Mapping[str, torch.Tensor]],
    names: Iterable[str],
) -> dict[str, tuple[float, float]]:
    """``(min, max)`` over all input values of the named Linear layers (padding included)."""
    ranges: dict[str, tuple[float, float]] = {}

    def update(name: str, x: torch.Tensor) -> None:
        low, high = (float(v) for v in torch.aminmax(x))
        previous = ranges.get(name, (low, high))
        ranges[name] = (min(previous[0], low), max(previous[1], high))

    _observe_inputs(model, calibration_batches, names, update)
    return ranges


def smoothing_scale(
    activation_absmax: torch.Tensor, weight: torch.Tensor, alpha: float
) -> torch.Tensor:
    """SmoothQuant scale per input channel ``j``: ``max|X_j|**alpha / max|W_:,j|**(1 - alpha)``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    weight_absmax = weight.detach().abs().amax(dim=0).float().clamp(min=1e-5)
    act = activation_absmax.float().clamp(min=1e-5)
    scale = act.pow(alpha) / weight_absmax.pow(1.0 - alpha)
    return scale.clamp(min=1e-5)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def smooth(
    model: nn.Module,
    activation_absmax: Mapping[str, torch.Tensor],
    alpha: float,
) -> None:
    """Replace each named Linear by a ``SmoothedLinear`` (in place)."""
    for name, absmax in activation_absmax.items():
        linear = model.get_submodule(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{name!r} is not a Linear layer of the model")
        _set_submodule(
            model, name, SmoothedLinear(linear, smoothing_scale(absmax, linear.weight, alpha))
        )


def _qconfig(activation_bits: _ActivationBits) -> Any:
    qconfig = torch.ao.quantization.qconfig
    observer = torch.ao.quantization.observer
    if activation_bits == 7:
        return qconfig.per_channel_dynamic_qconfig
    weight = observer.PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-64, quant_max=63
    )
    make_qconfig: Any = qconfig.QConfig
    return make_qconfig(activation=observer.default_dynamic_quant_observer, weight=weight)


def quantize_int8(
    model: nn.Module,
    calibration_batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    alpha: float = 0.8,
    smooth_layers: Sequence[str] = (FFN_OUTPUT,),
    keep_fp32: Sequence[str] = (),
    activation_bits: _ActivationBits = 8,
    activation_ranges: _ActivationRanges = "static",
) -> nn.Module:
    """Return an int8 (per-channel weights) copy of a BERT-like encoder.

    The defaults are the recommended CPU recipe for MiniLM-L6 (mean cosine 0.993, min
    0.99 against fp32 on 256 sentences, batch-invariant): 8-bit activations with static,
    calibrated ranges / 7-bit weights, FFN-output layers smoothed with ``alpha=0.8``.

    ``calibration_batches`` are keyword-argument dicts for ``model(**batch)`` (tokenizer
    output, padded like real traffic); they give the smoothing statistics and, with
    ``activation_ranges="static"``, each layer's input range. They must not be the
    evaluation set. ``activation_ranges="dynamic"`` quantizes activations with a scale
    computed per call over the whole batch (the stock behaviour: a row's output then
    depends on the other rows). Layer selections are regular expressions searched in
    module names (see ``FFN_OUTPUT`` and friends); ``keep_fp32`` layers are neither
    smoothed nor quantized.
    """
    if activation_bits not in (7, 8):
        raise ValueError(f"activation_bits must be 7 or 8, got {activation_bits}")
    if activation_ranges not in ("static", "dynamic"):
        raise ValueError(
            f"activation_ranges must be 'static' or 'dynamic', got {activation_ranges!r}"
        )
    batches = list(calibration_batches)
    quantized = copy.deepcopy(model).eval()
    keep = set(_matching_linears(quantized, keep_fp32))
    to_smooth = [name for name in _matching_linears(quantized, smooth_layers) if name not in keep]
    if to_smooth:
        smooth(quantized, collect_input_absmax(quantized, batches, to_smooth), alpha)
    targets = {
        name: _qconfig(activation_bits)
        for name in _matching_linears(quantized, (r".",))
        if name not in keep and name.removesuffix(".linear") not in keep
    }
    ranges = (
        collect_input_range(quantized, batches, targets) if activation_ranges == "static" else {}
    )
    mapping: dict[type[nn.Module], type[nn.Module]] = {
        nn.Linear: FullRangeDynamicLinear
        if activation_bits == 8
        else torch.ao.nn.quantized.dynamic.Linear
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantize_dynamic: Any = torch.ao.quantization.quantize_dynamic
        result: nn.Module = quantize_dynamic(
            quantized, qconfig_spec=targets, mapping=mapping, inplace=True
        )
    quant_max = 255 if activation_bits == 8 else 127
    for name, (low, high) in ranges.items():
        dynamic = result.get_submodule(name)
        if not isinstance(dynamic, torch.ao.nn.quantized.dynamic.Linear):
            raise TypeError(f"{name!r} was not quantized")  # pragma: no cover
        _set_submodule(result, name, StaticRangeLinear.from_dynamic(dynamic, low, high, quant_max))
    return result


def embed(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """Sentence embeddings: mean of ``last_hidden_state`` over the attention mask, L2-normalized.

    This is sentence-transformers' pooling for all-MiniLM-L6-v2; rows follow the batches.
    """
    rows: list[torch.Tensor] = []
    with torch.inference_mode():
        for batch in batches:
            hidden: torch.Tensor = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            rows.append(nn.functional.normalize(pooled, dim=-1))
    if not rows:
        raise ValueError("no batches to embed")
    return torch.cat(rows)


def fp32_gain_by_layer(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    candidates: Sequence[str],
    **quantize_kwargs: Any,
) -> dict[str, float]:
    """Sensitivity of each candidate Linear layer, measured on ``batches``.

    For each layer: the mean cosine (against fp32) of ``quantize_int8(model, batches,
    keep_fp32=<that layer>, **quantize_kwargs)`` minus that of quantizing everything. The
    larger the gain, the more it pays to keep that layer in fp32. Use calibration
    sentences here, not the evaluation set.
    """
    reference = embed(model, batches)

    def mean_cosine(keep: Sequence[str]) -> float:
        candidate = quantize_int8(model, batches, keep_fp32=keep, **quantize_kwargs)
        return agreement(reference, embed(candidate, batches)).mean_cosine

    baseline = mean_cosine(())
    names = _matching_linears(model, candidates)
    return {name: mean_cosine((f"^{re.escape(name)}$",)) - baseline for name in names}
