"""Precision modes, and the guard that refuses a quantized model that drifted too far.

At load time the worker embeds a fixed check set with the fp32 model and with the
candidate, by category (short queries, code, other languages, ...), and serves the
candidate only if every category's mean and minimum cosine similarity clear the floor and,
where the check set has query/passage pairs, retrieval rankings agree; otherwise it says
which category failed and by how much, and falls back to the next mode of the ladder.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from inferpool.logs import get_logger
from worker.models.quantization import Agreement, agreement
from worker.models.retrieval import RetrievalAgreement, retrieval_agreement

log = get_logger("worker.models.precision")

M = TypeVar("M")


class Precision(enum.StrEnum):
    AUTO = "auto"  # int8 on CPU, fp16 on CUDA, falling back as the guard requires
    NONE = "none"  # fp32
    INT8 = "int8"  # CPU: int8 weights and activations, outlier channels in fp32
    BF16 = "bf16"
    FP16 = "fp16"
    INT8_WEIGHT_ONLY = "int8-weight-only"  # CUDA, where torchao is installed


@dataclass(frozen=True, slots=True)
class CheckEmbeddings:
    """A model's embeddings of the check set: rows by category, and optionally the
    queries and passages of the retrieval check (rows aligned between models)."""

    categories: Mapping[str, torch.Tensor]
    queries: torch.Tensor | None = None
    passages: torch.Tensor | None = None

    @classmethod
    def of(cls, embedded: torch.Tensor | CheckEmbeddings) -> CheckEmbeddings:
        return embedded if isinstance(embedded, CheckEmbeddings) else cls({"all": embedded})


@dataclass(frozen=True, slots=True)
class Measured:
    """How a candidate agrees with fp32 on the check set."""

    overall: Agreement
    by_category: dict[str, Agreement]
    retrieval: RetrievalAgreement | None = None


def measure(reference: CheckEmbeddings, candidate: CheckEmbeddings) -> Measured:
    names = list(reference.categories)
    by_category = {
        name: agreement(reference.categories[name], candidate.categories[name]) for name in names
    }
    overall = agreement(
        torch.cat([reference.categories[n] for n in names]),
        torch.cat([candidate.categories[n] for n in names]),
    )
    retrieval = None
    if reference.queries is not None and reference.passages is not None:
        if candidate.queries is None or candidate.passages is None:
            raise ValueError("the candidate's check embeddings lack the retrieval pairs")
        retrieval = retrieval_agreement(
            reference.queries, reference.passages, candidate.queries, candidate.passages
        )
    return Measured(overall, by_category, retrieval)


@dataclass(frozen=True, slots=True)
class AccuracyFloor:
    """Applied to every category of the check set, not only to the average."""

    mean_cosine: float = 0.995
    min_cosine: float = 0.98
    top10_agreement: float = 0.99

    def shortfalls(self, measured: Measured) -> list[str]:
        """One line per failed requirement, saying by how much; empty when admitted."""
        found = []
        for name, result in measured.by_category.items():
            if result.mean_cosine < self.mean_cosine:
                found.append(f"{name}: mean cosine {result.mean_cosine:.4f} < {self.mean_cosine}"
                             f" (short by {self.mean_cosine - result.mean_cosine:.4f})")
            if result.min_cosine < self.min_cosine:
                found.append(f"{name}: min cosine {result.min_cosine:.4f} < {self.min_cosine}"
                             f" (short by {self.min_cosine - result.min_cosine:.4f})")
        retrieval = measured.retrieval
        if retrieval is not None and retrieval.top10 < self.top10_agreement:
            found.append(f"retrieval: top-10 agreement {retrieval.top10:.4f} < "
                         f"{self.top10_agreement} (short by "
                         f"{self.top10_agreement - retrieval.top10:.4f})")
        return found

    def admits(self, measured: Agreement | Measured) -> bool:
        if isinstance(measured, Agreement):
            measured = Measured(measured, {"all": measured})
        return not self.shortfalls(measured)


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
    by_category: dict[str, Agreement] = field(default_factory=dict)
    retrieval: RetrievalAgreement | None = None
    # what each refused mode measured, for the metrics (mode -> figures)
    refused_measured: tuple[tuple[Precision, Measured], ...] = ()


def choose(
    modes: Sequence[Precision],
    load: Callable[[Precision], M],
    embed: Callable[[M], torch.Tensor | CheckEmbeddings],
    floor: AccuracyFloor,
) -> tuple[Choice, M]:
    """Try ``modes`` in order: ``load(mode)`` builds the model in that mode (raising if the
    mode is unavailable here), ``embed(model)`` embeds the fixed check set (one tensor, or
    ``CheckEmbeddings`` by category). The first mode that clears the floor against fp32 in
    every category wins; fp32 is the last resort."""
    reference_model = load(Precision.NONE)
    reference = CheckEmbeddings.of(embed(reference_model))
    refused: list[tuple[Precision, str]] = []
    refused_measured: list[tuple[Precision, Measured]] = []
    for mode in modes:
        if mode is Precision.NONE:
            break
        try:
            candidate = load(mode)
            measured = measure(reference, CheckEmbeddings.of(embed(candidate)))
        except Exception as error:  # an unavailable mode is refused, never fatal
            refused.append((mode, f"unavailable here: {type(error).__name__}: {error}"))
            continue
        shortfalls = floor.shortfalls(measured)
        if not shortfalls:
            choice = Choice(mode, measured.overall, tuple(refused), measured.by_category,
                            measured.retrieval, tuple(refused_measured))
            return choice, candidate
        refused.append((mode, "below the floor vs fp32: " + "; ".join(shortfalls)))
        refused_measured.append((mode, measured))
    return Choice(Precision.NONE, None, tuple(refused), {}, None,
                  tuple(refused_measured)), reference_model
