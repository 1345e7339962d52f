"""Precision modes, and the guard that refuses a quantized model that drifted too far.

At load time the worker embeds a fixed calibration set with the fp32 model and with the
candidate, and serves the candidate only if mean and minimum cosine similarity clear the
floor; otherwise it says why and falls back to the next mode of the ladder.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from inferpool.logs import get_logger
from worker.models.quantization import Agreement, agreement

log = get_logger("worker.models.precision")

M = TypeVar("M")


class Precision(enum.StrEnum):
    AUTO = "auto"  # int8 on CPU, fp16 on CUDA, falling back as the guard requires
    NONE = "none"  # fp32
    INT8 = "int8"  # CPU: int8 weights, dynamic int8 activations
    BF16 = "bf16"
    FP16 = "fp16"
    INT8_WEIGHT_ONLY = "int8-weight-only"  # CUDA, where torchao is installed


@dataclass(frozen=True, slots=True)
class AccuracyFloor:
    mean_cosine: float = 0.99
    min_cosine: float = 0.97

    def admits(self, measured: Agreement) -> bool:
        return measured.mean_cosine >= self.mean_cosine and measured.min_cosine >= self.min_cosine


def ladder(requested: Precision, device: torch.device) -> list[Precision]:
    """The modes to try, fastest first; fp32 always ends the ladder."""
    if requested is Precision.AUTO:
        requested = Precision.FP16 if device.type == "cuda" else Precision.INT8
    order = {
        Precision.INT8: [Precision.INT8],
        Precision.INT8_WEIGHT_ONLY: [Precision.INT8_WEIGHT_ONLY, Precision.FP16],
        Precision.FP16: [Precision.FP16, Precision.BF16],
        Precision.BF16: [Precision.BF16],
        Precision.NONE: [],
    }[requested]
    return [*order, Precision.NONE]


@dataclass(frozen=True, slots=True)
class Choice:
    precision: Precision
    agreement: Agreement | None  # None for fp32 (the reference itself)
    refused: tuple[tuple[Precision, str], ...]  # modes tried first, and why they were refused


def choose(
    modes: Sequence[Precision],
    load: Callable[[Precision], M],
    embed: Callable[[M], torch.Tensor],
    floor: AccuracyFloor,
) -> tuple[Choice, M]:
    """Try ``modes`` in order: ``load(mode)`` builds the model in that mode (raising if the
    mode is unavailable here), ``embed(model)`` embeds the fixed calibration set. The first
    mode whose embeddings clear the floor against fp32's wins; fp32 is the last resort."""
    reference_model = load(Precision.NONE)
    reference = embed(reference_model)
    refused: list[tuple[Precision, str]] = []
    for mode in modes:
        if mode is Precision.NONE:
            break
        try:
            candidate = load(mode)
            measured = agreement(reference, embed(candidate))
        except Exception as error:  # an unavailable mode is refused, never fatal
            refused.append((mode, f"unavailable here: {type(error).__name__}: {error}"))
            continue
        if floor.admits(measured):
            return Choice(mode, measured, tuple(refused)), candidate
        refused.append(
            (
                mode,
                f"mean cosine {measured.mean_cosine:.4f}, min "
                f"{measured.min_cosine:.4f} vs fp32 is below the floor "
                f"(mean >= {floor.mean_cosine}, min >= {floor.min_cosine})",
            )
        )
    return Choice(Precision.NONE, None, tuple(refused)), reference_model
