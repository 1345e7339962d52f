"""One step of the step engine, in the model thread: the cache's row moves, a prefill
forward of the prefilling rows' chunks, a decode forward of the decoding rows, and each
row's next token (only for a prefilling row whose prompt is now complete)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from worker.execution.scheduler import StepPlan
from worker.execution.sequence import Sequence
from worker.models.generative.model import GenerativeModel
from worker.models.generative.sampling import choose_tokens
from worker.models.generative.slot_cache import SlotCache, left_padded


@dataclass(frozen=True, slots=True)
class StepOutcome:
    tokens: list[tuple[Sequence, int]]  # sequences that got a next token
    prefill_s: float
    decode_s: float


def _choose(model: GenerativeModel, rows: list[Sequence], logits: torch.Tensor) -> list[int]:
    return choose_tokens(logits, [s.item.sampling for s in rows], [s.generator for s in rows])


def run_step(model: GenerativeModel, cache: SlotCache, plan: StepPlan) -> StepOutcome:
    for op in plan.ops:
        if op.swap:
            cache.swap(op.source, op.target, op.length)
        else:
            cache.move(op.source, op.target, op.length)
    chosen: list[tuple[Sequence, int]] = []
    started = time.perf_counter()
    if plan.prefill:
        chunks = [chunk for _, chunk, _ in plan.prefill]
        starts = [start for _, _, start in plan.prefill]
        tokens, positions = left_padded(chunks, starts, model.pad_id)
        logits = model.forward_rows(cache, plan.prefill[0][0].row, tokens, positions)
        done = []
        for (sequence, chunk, _), row_logits in zip(plan.prefill, logits, strict=True):
            sequence.prefilled += len(chunk)
            if not sequence.prefilling:
                done.append((sequence, row_logits))
        if done:
            picked = _choose(model, [s for s, _ in done], torch.stack([lg for _, lg in done]))
            chosen += zip([s for s, _ in done], picked, strict=True)
    prefilled = time.perf_counter()
    if plan.decode:
        tokens = torch.tensor([[s.generated[-1]] for s in plan.decode], dtype=torch.long)
        positions = torch.tensor([[s.written] for s in plan.decode], dtype=torch.long)
        logits = model.forward_rows(cache, 0, tokens, positions)
        chosen += zip(plan.decode, _choose(model, plan.decode, logits), strict=True)
    return StepOutcome(chosen, prefilled - started, time.perf_counter() - prefilled)
