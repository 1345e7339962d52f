"""``sdpa_unpadded``: Hugging Face attention run on each sequence's real tokens only.

In fp32, PyTorch's attention kernels give a row results that differ in the last bit with
the padded length of its batch. An fp32 model does not care (cosine 0.9999999), but int8
with static ranges does: a last-bit difference that lands on a rounding boundary flips one
int8 value, and the flip cascades through the layers (alone vs batched: cosine down to
0.9994 on short texts). Here the rows of a right-padded batch are grouped by length and
each group runs through ``scaled_dot_product_attention`` cut to that length, with no mask:
the same call a text makes alone, so the same bits whatever the batch. It also skips the
padded keys (a batch of short texts next to one paragraph is padded to the paragraph).
Padding positions get zeros; they are masked out of the pooled embedding.

Masks that are not right padding (or a causal model) fall back to the ordinary masked call.
Float64 attention was measured as the other way to the same invariance: it costs half the
int8 speed-up on padded batches (docs/quantization.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

__all__ = ["NAME", "use_invariant_attention"]

NAME = "sdpa_unpadded"


def _right_padded_lengths(mask: torch.Tensor | None, batch: int, length: int) -> Any:
    """Each row's number of real keys, or None if ``mask`` is not plain right padding."""
    if mask is None:
        return [length] * batch
    if mask.dtype != torch.bool or mask.ndim != 4:
        return None
    keys = mask[:, 0, 0, :]  # which keys the first query of each row may see
    lengths = keys.sum(dim=-1)
    prefix = torch.arange(keys.shape[-1], device=keys.device).unsqueeze(0) < lengths.unsqueeze(1)
    if not torch.equal(keys, prefix) or not bool(mask.all(dim=2).eq(keys.unsqueeze(1)).all()):
        return None
    return lengths.tolist()


def _attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    batch, _, length, _ = query.shape
    lengths = None if getattr(module, "is_causal", False) else _right_padded_lengths(
        attention_mask, batch, length)
    if lengths is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, **kwargs)
    if all(n == length for n in lengths):  # no padding: one call on the whole batch
        out = functional.scaled_dot_product_attention(query, key, value, scale=scaling)
        return out.transpose(1, 2).contiguous(), None
    out = query.new_zeros(query.shape)
    for size in sorted(set(lengths)):
        rows = [row for row, n in enumerate(lengths) if n == size]
        if size == 0:
            continue
        index = torch.tensor(rows, device=query.device)
        part = functional.scaled_dot_product_attention(
            query[index, :, :size], key[index, :, :size], value[index, :, :size], scale=scaling
        )
        out[index, :, :size] = part
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, _attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_invariant_attention(model: nn.Module) -> None:
    """Switch a Hugging Face model (in place) to batch-invariant attention."""
    setter: Any = getattr(model, "set_attn_implementation", None)
    if setter is None:
        raise TypeError(f"{type(model).__name__} is not a Hugging Face model with pluggable "
                        "attention")
    setter(NAME)
