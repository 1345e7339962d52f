"""Sequence: one generative request while the step engine runs it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from inferpool.protocol.generation import FinishReason, GenerationOutput
from worker.models.generative.request import GenerationRequest
from worker.models.generative.text import TextAssembler
from worker.request import PendingRequest


@dataclass(slots=True, eq=False)
class Sequence:
    request: PendingRequest
    item: GenerationRequest
    assembler: TextAssembler
    generator: torch.Generator | None
    started: float = field(default_factory=time.monotonic)
    batch_size: int = 1  # sequences running when it started
    row: int = -1  # its row of the KV cache
    prefilled: int = 0  # prompt tokens in the cache
    generated: list[int] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # the text deltas released
    first_token_at: float | None = None
    last_token_at: float | None = None
    finish: FinishReason | None = None
    cancel_requested: bool = False
    duplicate: bool = False  # its result was stored already (an earlier run): drop quietly

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.item.prompt_ids

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.prompt)

    @property
    def written(self) -> int:
        """Positions of its row that hold keys: the prompt prefilled so far, then every
        generated token but the newest (fed at the next step)."""
        return self.prefilled + max(0, len(self.generated) - 1)

    def next_chunk(self, budget: int) -> tuple[list[int], int]:
        """Up to ``budget`` prompt tokens still to prefill, and where they start."""
        start = self.prefilled
        return list(self.prompt[start : start + budget]), start

    def accept(self, token: int, is_end: bool, now: float) -> str:
        """A newly chosen token: its text delta (empty while unstable or at the end)."""
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now
        if is_end:
            self.finish = FinishReason.STOP
            return ""
        self.generated.append(token)
        self.assembler.add(token)
        delta = self.assembler.delta()
        if self.assembler.stopped:
            self.finish = FinishReason.STOP
        elif len(self.generated) >= self.item.max_new_tokens:
            self.finish = FinishReason.LENGTH
        if delta:
            self.parts.append(delta)
        return delta

    def end(self, reason: FinishReason) -> str:
        """Finish (if not finished yet) with ``reason``; the last of its text."""
        if self.finish is None:
            self.finish = reason
        rest = self.assembler.finish()
        if rest:
            self.parts.append(rest)
        return rest

    def output(self) -> GenerationOutput:
        assert self.finish is not None
        ttft = None
        rate = 0.0
        if self.first_token_at is not None and self.last_token_at is not None:
            ttft = (self.first_token_at - self.started) * 1000
            span = self.last_token_at - self.first_token_at
            rate = (len(self.generated) - 1) / span if span > 0 else 0.0
        return GenerationOutput(
            text="".join(self.parts),
            finish_reason=self.finish,
            prompt_tokens=len(self.prompt),
            completion_tokens=len(self.generated),
            time_to_first_token_ms=ttft,
            tokens_per_s=rate,
        )
