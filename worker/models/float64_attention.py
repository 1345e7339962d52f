"""``sdpa_float64``: Hugging Face attention computed in float64, for batch invariance.

In fp32, PyTorch's attention kernels give a row results that differ in the last bit with
the padded length of its batch. An fp32 model does not care (cosine 0.9999999), but int8
with static ranges does: a last-bit difference that lands on a rounding boundary flips one
int8 value, and the flip cascades through the layers (alone vs batched: cosine down to
0.9994 on short texts). In float64 the differences stay below float32's resolution, so the
float32 result, and with it every int8 rounding, is the same in any batch (measured: no
pair below 0.99999). The int8 encoder uses it; the fp32 reference does not need it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["NAME", "use_float64_attention"]

NAME = "sdpa_float64"


def _attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.double()
    out, weights = sdpa_attention_forward(
        module, query.double(), key.double(), value.double(), attention_mask, **kwargs
    )
    return out.to(query.dtype), weights


AttentionInterface.register(NAME, _attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_float64_attention(model: nn.Module) -> None:
    """Switch a Hugging Face model (in place) to float64 attention."""
    setter: Any = getattr(model, "set_attn_implementation", None)
    if setter is None:
        raise TypeError(f"{type(model).__name__} is not a Hugging Face model with pluggable "
                        "attention")
    setter(NAME)
