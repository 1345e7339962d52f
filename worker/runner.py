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
from typing import Any

from inferpool.errors import InvalidInput, ModelError
from inferpool.lifecycle import Service
from inferpool.logs import get_logger
from worker.models.base import Model

log = get_logger("worker.runner")


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    outputs: list[Any]  # one per item: the model's output, or a ModelError
    seconds: float  # wall time of the whole run, retries included


def _forward(model: Model, items: Sequence[Any]) -> list[Any]:
    outputs = list(model.split(model.forward(model.collate(items)), len(items)))
    if len(outputs) != len(items):
        raise ModelError(
            f"batch size mismatch: model {model.name!r} returned {len(outputs)} outputs "
            f"for {len(items)} inputs"
        )
    return outputs


def _forward_one(model: Model, item: Any) -> Any:
    try:
        return _forward(model, [item])[0]
    except Exception as error:
        return ModelError(f"model {model.name!r} failed: {type(error).__name__}: {error}")


def run_batch(model: Model, items: Sequence[Any]) -> BatchOutcome:
    """Synchronous core, for the thread (and for direct use in tests and benchmarks)."""
    started = time.perf_counter()
    try:
        outputs = _forward(model, items)
    except Exception as error:
        log.warning(
            "batch.failed",
            model=model.name,
            size=len(items),
            error=f"{type(error).__name__}: {error}",
        )
        outputs = [_forward_one(model, item) for item in items]
    return BatchOutcome(outputs, time.perf_counter() - started)


def prepare_items(model: Model, items: Sequence[Any]) -> list[Any]:
    """The model's ``prepare`` over a chunk; if the chunk fails, item by item, so that a bad
    item becomes that item's error alone."""
    hook = model.prepare  # type: ignore[attr-defined]
    try:
        prepared = list(hook(items))
        if len(prepared) == len(items):
            return prepared
    except Exception:
        pass
    results: list[Any] = []
    for item in items:
        try:
            results.append(hook([item])[0])
        except Exception as error:
            results.append(InvalidInput(f"model {model.name!r} could not prepare the input: "
                                        f"{type(error).__name__}: {error}"))
    return results


class ModelRunner(Service):
    """Two threads: the model thread runs batches (and warm-up) one at a time; the
    preparation thread runs ``prepare`` (tokenization) meanwhile."""

    def __init__(self) -> None:
        self._model_thread: ThreadPoolExecutor | None = None
        self._prepare_thread: ThreadPoolExecutor | None = None

    async def _start(self) -> None:
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="inferpool-model")
        self._prepare_thread = ThreadPoolExecutor(1, thread_name_prefix="inferpool-prepare")

    async def _stop(self) -> None:
        for executor in (self._prepare_thread, self._model_thread):
            if executor is not None:
                await asyncio.to_thread(executor.shutdown, wait=True)

    async def run(self, model: Model, items: Sequence[Any]) -> BatchOutcome:
        self._require_started()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model_thread, run_batch, model, items)

    async def prepare(self, model: Model, items: Sequence[Any]) -> list[Any]:
        self._require_started()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._prepare_thread, prepare_items, model, items)

    async def warm_up(self, model: Model) -> float:
        """Run the model's warm-up in the model thread; returns its duration in seconds."""
        self._require_started()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        await loop.run_in_executor(self._model_thread, model.warmup)  # type: ignore[attr-defined]
        return time.perf_counter() - started
