"""``echo``: returns each request's inputs as its outputs.

It tests the pipeline without model cost."""

from __future__ import annotations

from typing import Any

from worker.models.base import ListModel


class EchoModel(ListModel):
    name = "echo"
    version = "1"

    def forward(self, batch: Any) -> Any:
        return batch


def create() -> EchoModel:
    return EchoModel()
