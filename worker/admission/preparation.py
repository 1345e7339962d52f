"""Preparation: each model's ``prepare`` hook (e.g. tokenization) over a fetched chunk, run
once per request in a thread of its own, before the requests are batched: the fetch loop
never waits behind a batch, and the model thread never tokenizes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inferpool.errors import InvalidInput, RequestError, StageHung
from inferpool.lifecycle import Service
from worker.models.base import Model, has_hook
from worker.models.registry import ModelRegistry
from worker.request import PendingRequest, Rejection


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
            results.append(
                InvalidInput(
                    f"model {model.name!r} could not prepare the input: "
                    f"{type(error).__name__}: {error}"
                )
            )
    return results


class Preparation(Service):
    """Runs ``prepare`` (and ``cost``) for admitted requests in the preparation thread."""

    def __init__(self, registry: ModelRegistry, stage_timeout_s: float | None = None) -> None:
        self._registry = registry
        self._stage_timeout_s = stage_timeout_s
        self._hung = False
        self._thread: ThreadPoolExecutor | None = None

    async def _start(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="inferpool-prepare")

    async def _stop(self) -> None:
        if self._thread is not None:  # a hung thread is never waited for
            await asyncio.to_thread(self._thread.shutdown, wait=not self._hung)

    async def prepare(
        self, requests: list[PendingRequest]
    ) -> tuple[list[PendingRequest], list[Rejection]]:
        """The requests with their prepared items and costs, and those that failed to
        prepare (each alone: its neighbours are prepared as usual)."""
        self._require_started()
        by_model: dict[str, list[PendingRequest]] = defaultdict(list)
        for request in requests:
            by_model[request.model].append(request)
        ready: list[PendingRequest] = []
        rejected: list[Rejection] = []
        loop = asyncio.get_running_loop()
        for name, group in by_model.items():
            model = self._registry.get(name)
            if not has_hook(model, "prepare"):
                ready.extend(group)
                continue
            items = [request.item for request in group]
            prepared = await self._bounded(
                loop.run_in_executor(self._thread, prepare_items, model, items)
            )
            measures_cost = has_hook(model, "cost")
            for request, item in zip(group, prepared, strict=True):
                if isinstance(item, Exception):
                    error = item if isinstance(item, RequestError) else InvalidInput(str(item))
                    rejected.append(Rejection.of(request, error))
                    continue
                cost = model.cost(item) if measures_cost else 1  # type: ignore[attr-defined]
                ready.append(dataclasses.replace(request, item=item, cost=cost))
        return ready, rejected

    async def _bounded(self, work: asyncio.Future[list[Any]]) -> list[Any]:
        try:
            return await asyncio.wait_for(work, self._stage_timeout_s)
        except TimeoutError:
            self._hung = True
            raise StageHung(
                f"prepare ran past {self._stage_timeout_s:g} s (INFERPOOL_STAGE_TIMEOUT_S); "
                "the worker must be restarted"
            ) from None
