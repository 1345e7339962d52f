"""Preparation: each model's ``prepare`` hook (e.g. tokenization) over a fetched chunk, run
once per request, in the runner's preparation thread, before the requests are batched."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from inferpool.errors import InvalidInput, RequestError
from worker.intake import Rejection
from worker.models.base import has_hook
from worker.models.registry import ModelRegistry
from worker.request import PendingRequest
from worker.runner import ModelRunner


async def prepare(
    runner: ModelRunner, registry: ModelRegistry, requests: list[PendingRequest]
) -> tuple[list[PendingRequest], list[Rejection]]:
    """The requests with their prepared items and costs, and those that failed to prepare."""
    by_model: dict[str, list[PendingRequest]] = defaultdict(list)
    for request in requests:
        by_model[request.model].append(request)
    ready: list[PendingRequest] = []
    rejected: list[Rejection] = []
    for name, group in by_model.items():
        model = registry.get(name)
        if not has_hook(model, "prepare"):
            ready.extend(group)
            continue
        prepared = await runner.prepare(model, [request.item for request in group])
        measures_cost = has_hook(model, "cost")
        for request, item in zip(group, prepared, strict=True):
            if isinstance(item, Exception):
                error = item if isinstance(item, RequestError) else InvalidInput(str(item))
                rejected.append(Rejection.of(request, error))
                continue
            cost = model.cost(item) if measures_cost else 1  # type: ignore[attr-defined]
            ready.append(dataclasses.replace(request, item=item, cost=cost))
    return ready, rejected
