"""ModelRunner: runs a model on a batch in a dedicated thread, off the event loop.

Heartbeats and fetching go on while the model computes. If a batch fails, each request is
retried alone so that one bad request does not fail its neighbours; every request ends
with either an output or a ModelError, and the count always matches the batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from inferpool.errors import ModelError, StageHung
from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from worker.models.base import Model

log = get_logger("worker.runner")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    outputs: list[Any]  # one per item: the model's output, or a ModelError
    seconds: float  # wall time of the whole run, retries included


def _outputs(model: Model, batch: Any, count: int) -> list[Any]:
    outputs = list(model.split(model.forward(batch), count))
    if len(outputs) != count:
        raise ModelError(
            f"batch size mismatch: model {model.name!r} returned {len(outputs)} outputs "
            f"for {count} inputs"
        )
    return outputs


def _forward_one(model: Model, item: Any) -> Any:
    try:
        return _outputs(model, model.collate([item]), 1)[0]
    except Exception as error:
        return ModelError(f"model {model.name!r} failed: {type(error).__name__}: {error}")


def collate_batch(model: Model, items: Sequence[Any]) -> Any:
    """The model's batch for ``items`` (in the preparation thread), or the exception."""
    try:
        return model.collate(items)
    except Exception as error:
        return _CollateFailed(error)


@dataclass(frozen=True, slots=True)
class _CollateFailed:
    error: Exception


def compute_batch(model: Model, items: Sequence[Any], batch: Any) -> BatchOutcome:
    """Forward and split a collated batch (in the model thread). If anything fails, each
    request is run alone, so only the one that fails gets a ModelError."""
    started = time.perf_counter()
    try:
        if isinstance(batch, _CollateFailed):
            raise batch.error
        outputs = _outputs(model, batch, len(items))
    except Exception as error:
        log.warning(
            "batch.failed",
            model=model.name,
            size=len(items),
            error=f"{type(error).__name__}: {error}",
        )
        outputs = [_forward_one(model, item) for item in items]
    return BatchOutcome(outputs, time.perf_counter() - started)


def run_batch(model: Model, items: Sequence[Any]) -> BatchOutcome:
    """Collate, forward and split in the calling thread (tests and benchmarks)."""
    return compute_batch(model, items, collate_batch(model, items))


class ModelRunner(Service):
    """Two threads: the model thread runs batches (and warm-up) one at a time; the collate
    thread builds the next batch meanwhile."""

    def __init__(self, stage_timeout_s: float | None = None) -> None:
        self._stage_timeout_s = stage_timeout_s
        self.hung = False  # a batch ran past the stage timeout; its thread is still in it
        self._model_thread: ThreadPoolExecutor | None = None
        self._collate_thread: ThreadPoolExecutor | None = None

    async def _start(self) -> None:
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="inferpool-model")
        self._collate_thread = ThreadPoolExecutor(1, thread_name_prefix="inferpool-collate")

    async def _stop(self) -> None:
        for executor in (self._collate_thread, self._model_thread):
            if executor is not None:  # a hung thread is never waited for
                await asyncio.to_thread(executor.shutdown, wait=not self.hung)

    async def run(self, model: Model, items: Sequence[Any]) -> BatchOutcome:
        """Collate in the collate thread (pinned memory, non-blocking copies to the
        device), then forward and split in the model thread: while one batch computes, the
        next one is being collated."""
        self._require_started()
        loop = asyncio.get_running_loop()
        batch = await self._bounded(
            loop.run_in_executor(self._collate_thread, collate_batch, model, items), "collate"
        )
        return await self._bounded(
            loop.run_in_executor(self._model_thread, compute_batch, model, items, batch), "forward"
        )

    async def _bounded(self, work: asyncio.Future[T], stage: str) -> T:
        try:
            return await asyncio.wait_for(work, self._stage_timeout_s)
        except TimeoutError:
            self.hung = True
            raise StageHung(
                f"{stage} of a batch ran past {self._stage_timeout_s:g} s "
                "(INFERPOOL_STAGE_TIMEOUT_S); the worker must be restarted"
            ) from None

    async def warm_up(self, model: Model) -> float:
        """Run the model's warm-up in the model thread; returns its duration in seconds."""
        self._require_started()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        await loop.run_in_executor(self._model_thread, model.warmup)  # type: ignore[attr-defined]
        return time.perf_counter() - started
