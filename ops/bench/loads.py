"""Load generators: a closed loop (keep K requests outstanding: saturation) and an open loop
(Poisson arrivals at a fixed rate: latency under a given load), over any ``LoadTarget``.

A target sends texts and reports each answer as a ``Completion`` on its ``completed`` queue;
the loops decide what to send when, and which completions a measurement counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ops.bench.stats import Completion, LoadPoint, summarize

#: Called about once a second with a short status line ("answered 1,234 · 400/s").
Tick = Callable[[str], None]


class LoadTarget(Protocol):
    system: str
    completed: asyncio.Queue[list[Completion]]

    async def send(self, texts: Sequence[str], due: Sequence[float]) -> None:
        """Submit one request per text; ``due[i]`` is when text i was due (perf_counter)."""
        ...

    def pending(self) -> int:
        """Requests sent and not answered yet."""
        ...

    def abandon(self) -> int:
        """Forget every pending request (they count as lost); returns how many."""
        ...


def poisson_arrivals(rate_per_s: float, duration_s: float, rng: random.Random) -> list[float]:
    """Arrival times (seconds from 0, ascending, < duration_s) of a Poisson process: the
    gaps are independent and exponential with mean 1 / rate."""
    if rate_per_s <= 0 or duration_s <= 0:
        raise ValueError(f"rate and duration must be > 0, got {rate_per_s}/s for {duration_s}s")
    arrivals: list[float] = []
    now = rng.expovariate(rate_per_s)
    while now < duration_s:
        arrivals.append(now)
        now += rng.expovariate(rate_per_s)
    return arrivals


class TextCycle:
    """The texts to send, in order, round and round (every system gets the same sequence)."""

    def __init__(self, texts: Sequence[str]) -> None:
        if not texts:
            raise ValueError("no texts to send")
        self._texts = list(texts)
        self._next = 0

    def take(self, count: int) -> list[str]:
        taken = [self._texts[(self._next + i) % len(self._texts)] for i in range(count)]
        self._next = (self._next + count) % len(self._texts)
        return taken


class _Sender:
    """Runs each ``send`` as a task of its own (a send waits for the broker's ack), keeps the
    tasks referenced, and raises the first failure on ``check()``."""

    def __init__(self, target: LoadTarget) -> None:
        self._target = target
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    def send(self, texts: Sequence[str], due: Sequence[float]) -> None:
        task = asyncio.create_task(self._target.send(texts, due))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    def check(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"{self._target.system}: a send failed") from self._failure

    async def settle(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.check()


async def _next_completions(target: LoadTarget, until: float) -> list[Completion] | None:
    """The next completions, or None once ``until`` (perf_counter) has passed."""
    timeout = until - time.perf_counter()
    if timeout <= 0:
        return None
    try:
        return await asyncio.wait_for(target.completed.get(), timeout)
    except TimeoutError:
        return None


async def drain(target: LoadTarget, timeout_s: float) -> int:
    """Wait until nothing is pending (answers are read and dropped); returns how many were
    still pending at the timeout, and abandons them."""
    until = time.perf_counter() + timeout_s
    while target.pending() and await _next_completions(target, until) is not None:
        pass
    return target.abandon()


async def closed_loop(
    target: LoadTarget, texts: TextCycle, outstanding: int, warmup_s: float, measure_s: float,
    tick: Tick, drain_timeout_s: float = 60.0,
) -> LoadPoint:
    """Keep ``outstanding`` requests in flight: a new one for each answer. Counts the answers
    read during ``measure_s`` after ``warmup_s``: the saturation throughput."""
    sender = _Sender(target)
    started = time.perf_counter()
    window = (started + warmup_s, started + warmup_s + measure_s)
    counted: list[Completion] = []
    answered = 0
    sender.send(texts.take(outstanding), [started] * outstanding)
    next_tick = started + 1
    while (batch := await _next_completions(target, window[1])) is not None:
        now = time.perf_counter()
        answered += len(batch)
        counted += [c for c in batch if window[0] <= c.seen_at < window[1]]
        sender.send(texts.take(len(batch)), [now] * len(batch))
        sender.check()
        if now >= next_tick:
            next_tick = now + 1
            rate = len(counted) / max(now - window[0], 1e-9) if now > window[0] else 0.0
            tick(f"answered {len(counted):,} · {rate:,.0f}/s")
    await sender.settle()
    pending = target.pending()
    lost = await drain(target, drain_timeout_s)
    point = summarize(counted, system=target.system, mode="closed", duration_s=measure_s,
                      lost=lost)
    point.outstanding = outstanding
    point.answered_total = answered + pending - lost
    return point


async def open_loop(
    target: LoadTarget, texts: TextCycle, rate_per_s: float, duration_s: float,
    warmup_s: float, tick: Tick, seed: int = 0, drain_timeout_s: float = 30.0,
) -> LoadPoint:
    """Poisson arrivals at ``rate_per_s`` for ``duration_s``; latency of the requests due
    after ``warmup_s``, answered throughput over the same span."""
    arrivals = poisson_arrivals(rate_per_s, duration_s, random.Random(seed))
    sender = _Sender(target)
    seen: list[Completion] = []
    arrived = asyncio.Event()
    collector = asyncio.create_task(_collect(target, seen, arrived))
    start = time.perf_counter() + 0.05
    max_lag = 0.0
    index = 0
    next_tick = start + 1
    try:
        while index < len(arrivals):
            now = time.perf_counter()
            due = start + arrivals[index]
            if due > now:
                await asyncio.sleep(due - now)
                continue
            end = index
            while end < len(arrivals) and start + arrivals[end] <= now:
                end += 1
            max_lag = max(max_lag, now - due)
            sender.send(texts.take(end - index), [start + a for a in arrivals[index:end]])
            sender.check()
            index = end
            if now >= next_tick:
                next_tick = now + 1
                tick(f"{rate_per_s:,.0f}/s offered · sent {index:,} · answered {len(seen):,}")
        await sender.settle()
        lost = await _wait_all(target, arrived, drain_timeout_s)
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
    measured_from = start + warmup_s
    span = (measured_from, start + duration_s)
    due_in_window = [c for c in seen if c.sent_at >= measured_from]
    answered_in_window = sum(1 for c in seen if span[0] <= c.seen_at < span[1])
    point = summarize(due_in_window, system=target.system, mode="open",
                      duration_s=duration_s - warmup_s, lost=lost)
    point.achieved_rps = answered_in_window / (span[1] - span[0])
    point.offered_rps = rate_per_s
    point.max_lag_ms = max_lag * 1000
    point.answered_total = len(seen)
    point.early_p90_ms, point.late_p90_ms = _thirds_p90(due_in_window)
    return point


def _thirds_p90(completions: Sequence[Completion]) -> tuple[float | None, float | None]:
    """p90 latency of the first and of the last third of ``completions`` by send time."""
    ordered = sorted(completions, key=lambda c: c.sent_at)
    third = len(ordered) // 3
    if third < 10:
        return None, None

    def p90(part: Sequence[Completion]) -> float:
        latencies = sorted(c.latency_ms for c in part)
        return latencies[int(0.9 * (len(latencies) - 1))]

    return p90(ordered[:third]), p90(ordered[-third:])


async def _collect(target: LoadTarget, into: list[Completion], arrived: asyncio.Event) -> None:
    while True:
        into += await target.completed.get()
        arrived.set()


async def _wait_all(target: LoadTarget, arrived: asyncio.Event, timeout_s: float) -> int:
    """Wait (while the collector reads answers) until nothing is pending; abandon the rest."""
    until = time.perf_counter() + timeout_s
    while target.pending() and (left := until - time.perf_counter()) > 0:
        arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), min(left, 0.5))
    return target.abandon()
