"""The accuracy guard of generative models: a reduced precision is served only if it still
answers like fp32.

At load time fp32 continues a fixed set of chat prompts greedily. Each candidate
precision is then measured two ways against those continuations: its top-1 next token at
every position, given fp32's tokens before it (teacher forcing: one forward per prompt),
and its own greedy continuations, compared token by token up to their first difference.
Below the floor (``GuardFloor``) the mode is refused, with the figures that refused it, and
the next mode of the ladder is tried; fp32 ends the ladder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from worker.models.generative.greedy import greedy_continuations, next_token_choices
from worker.models.generative.options import GuardFloor
from worker.models.precision import Precision

#: The fixed prompt set (chat messages of one user turn), never the calibration set.
GUARD_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the ocean.",
    "Name three colours of the rainbow.",
    "How do I boil an egg?",
    "What is two plus three?",
    "Give me a tip for learning to code.",
    "Why do leaves change colour in autumn?",
    "Translate 'good morning' into German.",
)


@dataclass(frozen=True, slots=True)
class GuardFigures:
    top1_agreement: float  # teacher-forced next-token agreement with fp32
    greedy_prefix: float  # share of fp32's tokens the candidate's greedy run matched first
    positions: int  # tokens compared

    def describe(self) -> str:
        return (
            f"top-1 agreement {self.top1_agreement:.3f}, greedy prefix "
            f"{self.greedy_prefix:.3f} over {self.positions} tokens"
        )


@dataclass(frozen=True, slots=True)
class GenerativeChoice:
    precision: Precision
    figures: GuardFigures | None  # None for fp32 (the reference itself)
    refused: tuple[tuple[Precision, str], ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model built in one precision, and how to run it."""

    model: Any
    dtype: torch.dtype
    device: torch.device


def _prefix(reference: Sequence[int], candidate: Sequence[int]) -> int:
    matched = 0
    for expected, actual in zip(reference, candidate, strict=False):
        if expected != actual:
            break
        matched += 1
    return matched


def measure(
    candidate: Candidate,
    prompts: Sequence[Sequence[int]],
    reference: Sequence[Sequence[int]],
    end_ids: frozenset[int],
    pad_id: int,
) -> GuardFigures:
    agree = total = 0
    for prompt, continuation in zip(prompts, reference, strict=True):
        choices = next_token_choices(candidate.model, prompt, continuation, candidate.device)
        agree += sum(a == b for a, b in zip(choices, continuation, strict=True))
        total += len(continuation)
    own = greedy_continuations(
        candidate.model, prompts, max(len(r) for r in reference), end_ids, pad_id,
        candidate.dtype, candidate.device,
    )
    matched = sum(_prefix(r, o) for r, o in zip(reference, own, strict=True))
    return GuardFigures(agree / max(total, 1), matched / max(total, 1), total)


def choose_precision(
    modes: Sequence[Precision],
    build: Callable[[Precision], Candidate],
    prompts: Sequence[Sequence[int]],
    end_ids: frozenset[int],
    pad_id: int,
    floor: GuardFloor,
    new_tokens: int,
) -> tuple[GenerativeChoice, Candidate]:
    """The first of ``modes`` that clears ``floor`` against fp32 (built by ``build``),
    else fp32."""
    reference_model = build(Precision.NONE)
    if all(mode is Precision.NONE for mode in modes):
        return GenerativeChoice(Precision.NONE, None, ()), reference_model
    reference = greedy_continuations(
        reference_model.model, prompts, new_tokens, end_ids, pad_id,
        reference_model.dtype, reference_model.device,
    )
    refused: list[tuple[Precision, str]] = []
    for mode in modes:
        if mode is Precision.NONE:
            break
        try:
            candidate = build(mode)
            figures = measure(candidate, prompts, reference, end_ids, pad_id)
        except Exception as error:  # an unavailable mode is refused, never fatal
            refused.append((mode, f"unavailable here: {type(error).__name__}: {error}"))
            continue
        if figures.top1_agreement >= floor.top1_agreement and (
            figures.greedy_prefix >= floor.greedy_prefix
        ):
            return GenerativeChoice(mode, figures, tuple(refused)), candidate
        refused.append((
            mode,
            f"{figures.describe()} vs fp32 is below the floor (top-1 >= "
            f"{floor.top1_agreement}, greedy prefix >= {floor.greedy_prefix})",
        ))
    return GenerativeChoice(Precision.NONE, None, tuple(refused)), reference_model
