"""Retrieval agreement: do a candidate's embeddings rank passages for a query as fp32's do?

For each query, passages are ranked by cosine similarity under both sets of embeddings.

* top-1 agreement: the share of queries whose best passage is the same under both;
* top-10 agreement: the share of queries whose best passage under fp32 is still among the
  candidate's 10 best (what a search user sees: the answer is still on the first page);
* top-10 overlap: the mean share of fp32's 10 best passages that are also among the
  candidate's 10 best. Harsher: near-tied passages (``"ok ok ok"`` and ``"ok ok ok ok"``)
  at ranks 10 and 11 swap on perturbations far smaller than the rankings' meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RetrievalAgreement", "retrieval_agreement"]


@dataclass(frozen=True, slots=True)
class RetrievalAgreement:
    top1: float
    top10: float
    overlap10: float
    queries: int

    def __str__(self) -> str:
        return (f"top-1 {self.top1:.4f}, top-10 {self.top10:.4f}, top-10 overlap "
                f"{self.overlap10:.4f} ({self.queries} queries)")


def retrieval_agreement(
    reference_queries: torch.Tensor,
    reference_passages: torch.Tensor,
    candidate_queries: torch.Tensor,
    candidate_passages: torch.Tensor,
    k: int = 10,
) -> RetrievalAgreement:
    """Compare rankings; all four are L2-normalized ``[N, D]`` matrices (rows aligned)."""
    if reference_queries.shape != candidate_queries.shape or (
        reference_passages.shape != candidate_passages.shape
    ):
        raise ValueError("reference and candidate embeddings must have the same shapes")
    if reference_queries.shape[0] == 0 or reference_passages.shape[0] == 0:
        raise ValueError("need at least one query and one passage")
    k = min(k, reference_passages.shape[0])
    reference = reference_queries.double() @ reference_passages.double().T
    candidate = candidate_queries.double() @ candidate_passages.double().T
    best = reference.argmax(dim=1)
    top1 = (best == candidate.argmax(dim=1)).double().mean()
    best_reference = reference.topk(k, dim=1).indices
    best_candidate = candidate.topk(k, dim=1).indices
    top10 = (best_candidate == best.unsqueeze(1)).any(dim=1).double().mean()
    overlap = (best_reference.unsqueeze(2) == best_candidate.unsqueeze(1)).any(dim=2)
    return RetrievalAgreement(top1=float(top1), top10=float(top10),
                              overlap10=float(overlap.double().mean()),
                              queries=reference.shape[0])
