"""Greedy continuations of a few prompts at once through a ``SlotCache``: what the accuracy
guard compares, and the load-time check that a model works with the step engine's cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from worker.models.generative.slot_cache import SlotCache, left_padded, run_forward


def greedy_continuations(
    model: Any,
    prompts: Sequence[Sequence[int]],
    new_tokens: int,
    end_ids: frozenset[int],
    pad_id: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> list[list[int]]:
    """Each prompt's greedy continuation: ``new_tokens`` tokens, or fewer up to and
    including an end token."""
    longest = max(len(p) for p in prompts)
    cache = SlotCache(model.config, len(prompts), longest + new_tokens + 1, dtype, device)
    outputs: list[list[int]] = [[] for _ in prompts]
    with torch.inference_mode():
        tokens, positions = left_padded([list(p) for p in prompts], [0] * len(prompts), pad_id)
        logits = run_forward(model, cache, 0, tokens.to(device), positions.to(device))
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        for step in range(new_tokens):
            chosen = logits.argmax(dim=-1)
            for row, token in enumerate(chosen.tolist()):
                if not outputs[row] or outputs[row][-1] not in end_ids:
                    outputs[row].append(int(token))
            if step + 1 == new_tokens or all(o[-1] in end_ids for o in outputs):
                break
            logits = run_forward(model, cache, 0, chosen[:, None], lengths[:, None])
            lengths = lengths + 1
    return outputs


def next_token_choices(
    model: Any, prompt: Sequence[int], continuation: Sequence[int], device: torch.device | str
) -> list[int]:
    """The model's top-1 next token at each position of ``continuation``, given the prompt
    and the continuation's tokens before it (teacher forcing, one forward)."""
    ids = torch.tensor([[*prompt, *continuation]], device=device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0]
    start = len(prompt) - 1
    return [int(t) for t in logits[start : start + len(continuation)].argmax(dim=-1).tolist()]
