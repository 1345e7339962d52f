"""Choosing each sequence's next token from its logits: greedy (argmax, one call for every
greedy row), or sampled with temperature, top-k and top-p from a generator seeded with the
request's seed, so that a seed reproduces its tokens."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worker.models.generative.request import SamplingParams


def new_generator(params: SamplingParams) -> torch.Generator | None:
    """The sequence's own random stream (None when it decodes greedily)."""
    if params.greedy:
        return None
    generator = torch.Generator()
    generator.manual_seed(params.seed)
    return generator


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    scores = logits.float() / params.temperature
    if 0 < params.top_k < scores.shape[-1]:
        threshold = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        # keep the smallest prefix whose probability reaches top_p (at least one token)
        drop = cumulative - torch.softmax(ordered, dim=-1) >= params.top_p
        scores = scores.scatter(0, order[drop], float("-inf"))
    probabilities = torch.softmax(scores, dim=-1).cpu()
    return int(torch.multinomial(probabilities, 1, generator=generator))


def choose_tokens(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """One token per row of ``logits`` (``[rows, vocab]``)."""
    chosen = logits.argmax(dim=-1).tolist()
    for row, (sampling, generator) in enumerate(zip(params, generators, strict=True)):
        if generator is not None and not sampling.greedy:
            chosen[row] = _sample(logits[row], sampling, generator)
    return [int(token) for token in chosen]
