"""Scheduler: which sequences run in the next step, and where their keys live.

A pure unit (no model, no clock of its own). Rows of the KV cache: the decoding sequences
hold rows ``0 .. D-1`` (one forward decodes them all, in place), the prefilling ones the
rows right after. Each step decodes every decoding sequence by one token and prefills up
to ``prefill_budget`` prompt tokens (padded) of the prefilling ones, so a long prompt is
spread over several steps and never stalls the running sequences for longer than one
chunk. New sequences join between steps while rows are free; finished ones leave at once,
the last row moving into the hole (a copy of that sequence's keys only).

A suspect (a request whose earlier run ended its worker) runs alone: nothing new starts
while one waits, it starts once nothing runs, and nothing starts beside it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.execution.sequence import Sequence
from worker.request import PendingRequest

#: A prefilling sequence gets at least this many tokens of the budget per step.
MIN_PREFILL_CHUNK = 16


@dataclass(frozen=True, slots=True)
class CacheOp:
    """A row move (``swap`` False: source's keys copied to target) or exchange."""

    source: int
    target: int
    length: int
    swap: bool = False


@dataclass(slots=True)
class StepPlan:
    ops: list[CacheOp]
    decode: list[Sequence]  # rows 0 .. len-1, in row order
    prefill: list[tuple[Sequence, list[int], int]]  # (sequence, chunk, start), rows after


@dataclass(slots=True)
class Scheduler:
    rows: int
    prefill_budget: int
    waiting: deque[PendingRequest] = field(default_factory=deque)
    suspects: deque[PendingRequest] = field(default_factory=deque)
    decoding: list[Sequence] = field(default_factory=list)
    prefilling: list[Sequence] = field(default_factory=list)
    alone: Sequence | None = None  # the suspect running alone
    _ops: list[CacheOp] = field(default_factory=list)

    @property
    def running(self) -> list[Sequence]:
        return [*self.decoding, *self.prefilling]

    @property
    def max_prefilling(self) -> int:
        return max(1, self.prefill_budget // MIN_PREFILL_CHUNK)

    def room(self) -> int:
        """How many sequences may start now."""
        if self.alone is not None or self.suspects:
            return 0
        free_rows = self.rows - len(self.decoding) - len(self.prefilling)
        return max(0, min(free_rows, self.max_prefilling - len(self.prefilling)))

    def may_start_suspect(self) -> bool:
        return bool(self.suspects) and self.alone is None and not self.running

    def start(self, sequence: Sequence, alone: bool = False) -> None:
        sequence.row = len(self.decoding) + len(self.prefilling)
        self.prefilling.append(sequence)
        if alone:
            self.alone = sequence

    def usage(self) -> int:
        """Positions of the KV cache in use."""
        return sum(s.written for s in self.running)

    # --- a step --------------------------------------------------------------------------

    def plan(self) -> StepPlan:
        """The next step (and the row moves to apply before it)."""
        prefill: list[tuple[Sequence, list[int], int]] = []
        if self.prefilling:
            share = max(1, self.prefill_budget // len(self.prefilling))
            prefill = [(s, *s.next_chunk(share)) for s in self.prefilling]
        ops, self._ops = self._ops, []
        return StepPlan(ops, list(self.decoding), prefill)

    def prefilled(self, sequence: Sequence) -> None:
        """Its whole prompt is in the cache: it decodes from the next step on."""
        first = len(self.decoding)  # the row of the first prefilling sequence
        index = self.prefilling.index(sequence)
        if sequence.row != first:
            other = self.prefilling[0]
            length = max(sequence.written, other.written)
            self._ops.append(CacheOp(sequence.row, first, length, swap=True))
            other.row, sequence.row = sequence.row, first
            self.prefilling[0], self.prefilling[index] = sequence, other
        self.prefilling.pop(0)
        self.decoding.append(sequence)

    def retire(self, sequence: Sequence) -> None:
        """It finished: its row is freed at once, the last rows moving into the gap."""
        if sequence is self.alone:
            self.alone = None
        if sequence in self.decoding:
            last = self.decoding.pop()
            if last is not sequence:
                self._move(last, sequence.row)
                self.decoding[self.decoding.index(sequence)] = last
            if self.prefilling:  # the decoding rows shrank by one: the last prefilling
                self._move(self.prefilling[-1], len(self.decoding))  # one fills the gap
        else:
            last = self.prefilling[-1]
            if last is not sequence:
                self._move(last, sequence.row)
            self.prefilling.remove(sequence)
        self.prefilling.sort(key=lambda s: s.row)
        sequence.row = -1

    def _move(self, sequence: Sequence, row: int) -> None:
        self._ops.append(CacheOp(sequence.row, row, sequence.written))
        sequence.row = row

    # --- queued requests -----------------------------------------------------------------

    def take_expired(self, now: float) -> list[PendingRequest]:
        """Queued requests whose deadline has passed: they are never run."""
        expired = [r for r in [*self.waiting, *self.suspects] if r.expired(now)]
        if expired:
            self.discard(lambda r: r.expired(now))
        return expired

    def take_waiting(self, count: int) -> list[PendingRequest]:
        return [self.waiting.popleft() for _ in range(min(count, len(self.waiting)))]

    def discard(self, predicate: Callable[[PendingRequest], bool]) -> list[PendingRequest]:
        gone = [r for r in [*self.waiting, *self.suspects] if predicate(r)]
        if gone:
            self.waiting = deque(r for r in self.waiting if not predicate(r))
            self.suspects = deque(r for r in self.suspects if not predicate(r))
        return gone

    def queued(self) -> int:
        return len(self.waiting) + len(self.suspects)
