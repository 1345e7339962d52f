"""Tiny models with fixed behaviour for the tests, importable as ``testing_models:<factory>``
(tests/ is on sys.path under pytest; worker subprocesses get it through PYTHONPATH).

``RecordingEcho`` counts processing without trusting the code under test: it appends
every input it runs to a file named by INFERPOOL_TEST_CALL_LOG (one JSON line per input).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from inferpool.errors import InvalidInput
from inferpool.wire import WireTensor
from worker.models.base import ListModel

CALL_LOG_ENV = "INFERPOOL_TEST_CALL_LOG"


class RecordingEcho(ListModel):
    name = "echo"
    version = "rec-1"

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.batch_sizes: list[int] = []
        self._path = os.environ.get(CALL_LOG_ENV)
        self._lock = threading.Lock()

    def forward(self, batch: Any) -> Any:
        with self._lock:
            self.calls.extend(batch)
            self.batch_sizes.append(len(batch))
            if self._path:
                with open(self._path, "a", encoding="utf-8") as log:
                    log.write("".join(json.dumps(item) + "\n" for item in batch))
                    log.flush()
                    os.fsync(log.fileno())
        return batch


class VectorModel(ListModel):
    """Accepts only a float32 tensor of shape (4,); returns it doubled, as float32."""

    name = "vector"
    version = "1"

    def validate(self, inputs: Any, params: Mapping[str, Any]) -> Any:
        if not isinstance(inputs, WireTensor):
            raise InvalidInput("vector expects a tensor")
        if inputs.dtype != "float32" or inputs.shape != (4,):
            raise InvalidInput(
                f"vector expects float32 of shape (4,), got {inputs.dtype} {list(inputs.shape)}"
            )
        return inputs.to_torch()

    def collate(self, items: Sequence[Any]) -> Any:
        import torch

        return torch.stack(list(items))

    def forward(self, batch: Any) -> Any:
        return batch * 2

    def split(self, outputs: Any, count: int) -> Sequence[Any]:
        return [WireTensor.from_torch(row) for row in outputs]


class ExplodingModel(ListModel):
    """Fails any batch holding the input "boom"; echoes everything else."""

    name = "exploding"
    version = "1"

    def forward(self, batch: Any) -> Any:
        if "boom" in batch:
            raise RuntimeError("boom")
        return batch


def recording_echo() -> RecordingEcho:
    return RecordingEcho()


def vector() -> VectorModel:
    return VectorModel()


def exploding() -> ExplodingModel:
    return ExplodingModel()


class NanModel(ListModel):
    """Answers the input "nan" with NaN, which JSON cannot carry; echoes anything else."""

    name = "nan"
    version = "1"

    def forward(self, batch: Any) -> Any:
        return [float("nan") if item == "nan" else item for item in batch]


class ExitingEcho(RecordingEcho):
    """Echoes, except that the input "poison" kills the whole process (after logging the
    attempt), every time: the request that no worker survives."""

    def forward(self, batch: Any) -> Any:
        if "poison" in batch:
            if self._path:
                with open(self._path, "a", encoding="utf-8") as log:
                    log.write(json.dumps("poison-attempt") + "\n")
                    log.flush()
                    os.fsync(log.fileno())
            os._exit(17)
        return super().forward(batch)


def exiting_echo() -> ExitingEcho:
    return ExitingEcho()
