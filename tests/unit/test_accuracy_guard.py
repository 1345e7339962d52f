"""The accuracy guard's logic: per-category floor, retrieval agreement, and its metrics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from prometheus_client import generate_latest

from worker.metrics import WorkerMetrics
from worker.models.precision import AccuracyFloor, CheckEmbeddings, Precision, choose
from worker.models.retrieval import retrieval_agreement


def unit_rows(generator: torch.Generator, rows: int, dim: int = 16) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=-1)


def nudged(rows: torch.Tensor, size: float, generator: torch.Generator) -> torch.Tensor:
    return torch.nn.functional.normalize(rows + size * torch.randn(rows.shape,
                                                                   generator=generator), dim=-1)


def test_retrieval_agreement_counts_rank_changes() -> None:
    queries = torch.eye(4)[:2]
    passages = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0.1, 0, 0], [0.9, 0.3, 0, 0], [0, 1.0, 0, 0], [0, 0.9, 0.2, 0]]), dim=-1)
    same = retrieval_agreement(queries, passages, queries, passages, k=2)
    assert (same.top1, same.top10, same.overlap10, same.queries) == (1.0, 1.0, 1.0, 2)
    swapped = passages[[1, 0, 2, 3]]  # query 0's two best passages trade places
    moved = retrieval_agreement(queries, passages, queries, swapped, k=2)
    assert moved.top1 == 0.5 and moved.top10 == 1.0 and moved.overlap10 == 1.0
    with pytest.raises(ValueError, match="same shapes"):
        retrieval_agreement(queries, passages, queries, passages[:3])


def test_the_floor_applies_to_every_category_and_says_by_how_much() -> None:
    generator = torch.Generator().manual_seed(0)
    reference = {"prose": unit_rows(generator, 32), "short": unit_rows(generator, 32)}
    good = {name: nudged(rows, 0.01, generator) for name, rows in reference.items()}
    bad_short = {**good, "short": nudged(reference["short"], 0.3, generator)}
    models = {Precision.NONE: reference, Precision.INT8: bad_short}

    def embed(model: dict[str, torch.Tensor]) -> CheckEmbeddings:
        return CheckEmbeddings(model)

    choice, chosen = choose([Precision.INT8, Precision.NONE], models.__getitem__, embed,
                            AccuracyFloor())
    assert choice.precision is Precision.NONE and chosen is reference
    reason = choice.refused[0][1]
    assert "short: mean cosine" in reason and "short by" in reason and "prose" not in reason
    # averaged over both categories the bad mode would look much better than "short" alone
    figures = dict(choice.refused_measured)[Precision.INT8]
    assert figures.overall.mean_cosine > figures.by_category["short"].mean_cosine

    models[Precision.INT8] = good
    choice, chosen = choose([Precision.INT8], models.__getitem__, embed, AccuracyFloor())
    assert choice.precision is Precision.INT8 and chosen is good
    assert set(choice.by_category) == {"prose", "short"}


def test_retrieval_below_the_floor_refuses_a_mode() -> None:
    generator = torch.Generator().manual_seed(1)
    passages = unit_rows(generator, 64)
    queries = nudged(passages[:32], 0.5, generator)
    reference = CheckEmbeddings({"all": passages}, queries, passages)
    shuffled = CheckEmbeddings({"all": passages}, queries, passages[torch.randperm(
        64, generator=generator)])
    candidates = {Precision.NONE: reference, Precision.INT8: shuffled}
    choice, _ = choose([Precision.INT8], candidates.__getitem__, lambda c: c, AccuracyFloor())
    assert choice.precision is Precision.NONE
    assert "retrieval: top-10 agreement" in choice.refused[0][1]


def test_per_category_and_retrieval_figures_are_exported() -> None:
    generator = torch.Generator().manual_seed(2)
    passages = unit_rows(generator, 16)
    reference = CheckEmbeddings({"code": passages}, passages[:4], passages)
    choice, _ = choose([Precision.INT8], lambda mode: reference, lambda c: c, AccuracyFloor())
    metrics = WorkerMetrics()
    metrics.model_loaded(SimpleNamespace(name="minilm", choice=choice, load_seconds=1.0))
    text = generate_latest(metrics.registry).decode()
    assert ('inferpool_model_agreement_cosine_by_category{category="code",model="minilm",'
            'precision="int8",stat="min"}') in text
    assert 'inferpool_model_retrieval_agreement{model="minilm",precision="int8",stat="top10"}' \
        in text
