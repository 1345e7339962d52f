"""Tiny models with fixed behaviour for the tests, importable as ``testing_models:<factory>``
(tests/ is on sys.path under pytest; worker subprocesses get it through PYTHONPATH).

``RecordingEcho`` counts processing without trusting the code under test: it appends
every input it runs to a file named by INFERPOOL_TEST_CALL_LOG (one JSON line per input).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from inferpool.errors import InvalidInput
from inferpool.protocol.wire import WireTensor
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


def _log_attempt(path: str | None, what: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps(what) + "\n")
            log.flush()
            os.fsync(log.fileno())


class PrepareKillingEcho(RecordingEcho):
    """Has a ``prepare`` hook (tokenization, for text models) that kills the whole process on
    the input "poison", every time: a request no worker gets past admission."""

    def prepare(self, items: Sequence[Any]) -> list[Any]:
        if "poison" in items:
            _log_attempt(self._path, "poison-attempt")
            os._exit(17)
        return list(items)


class HangingEcho(RecordingEcho):
    """Never returns from a batch holding the input "poison" (until GATE_LIMIT_S): a hang."""

    def forward(self, batch: Any) -> Any:
        if "poison" in batch:
            _log_attempt(self._path, "poison-attempt")
            time.sleep(GATE_LIMIT_S)
        return super().forward(batch)


def prepare_killing_echo() -> PrepareKillingEcho:
    return PrepareKillingEcho()


def hanging_echo() -> HangingEcho:
    return HangingEcho()


# --- models for the fault-injection suite (tests/faults) ---------------------------------
#
# A gate is a directory named by INFERPOOL_TEST_GATE: while the file "open" is missing from
# it, a gated model touches "entered" and blocks where it waits at the gate (in forward(),
# or in prepare() for GatedPrepareEcho); creating "open" lets every blocked and later call
# through. Without the variable the models never block. A blocked model gives up after
# GATE_LIMIT_S, so a forgotten gate cannot hang a test run.

GATE_ENV = "INFERPOOL_TEST_GATE"
DELAY_ENV = "INFERPOOL_TEST_DELAY_S"
GATE_LIMIT_S = 120.0


def _wait_at_gate() -> None:
    gate = os.environ.get(GATE_ENV)
    if not gate or os.path.exists(os.path.join(gate, "open")):
        return
    with open(os.path.join(gate, "entered"), "a", encoding="utf-8"):
        pass
    deadline = time.monotonic() + GATE_LIMIT_S
    while not os.path.exists(os.path.join(gate, "open")) and time.monotonic() < deadline:
        time.sleep(0.02)


class GatedEcho(RecordingEcho):
    """Blocks at the gate before it runs (and records) a batch."""

    def forward(self, batch: Any) -> Any:
        _wait_at_gate()
        return super().forward(batch)


class HeldEcho(RecordingEcho):
    """Runs and records a batch, then blocks at the gate before returning its outputs:
    the window between inference and the result write."""

    def forward(self, batch: Any) -> Any:
        outputs = super().forward(batch)
        _wait_at_gate()
        return outputs


class SlowEcho(RecordingEcho):
    """Sleeps INFERPOOL_TEST_DELAY_S (default 0.2) in every batch, then records and echoes.
    The sleep releases the GIL: the worker's event loop goes on meanwhile."""

    def forward(self, batch: Any) -> Any:
        time.sleep(float(os.environ.get(DELAY_ENV, "0.2")))
        return super().forward(batch)


def gated_echo() -> GatedEcho:
    return GatedEcho()


def held_echo() -> HeldEcho:
    return HeldEcho()


def slow_echo() -> SlowEcho:
    return SlowEcho()


class SlowCollateEcho(RecordingEcho):
    """Has a ``prepare`` hook (as text models do: tokenization), and a ``collate`` that
    sleeps INFERPOOL_TEST_DELAY_S (default 0.2). The worker runs both in its preparation
    thread, so while a batch collates, the next fetched chunk waits to be prepared."""

    def prepare(self, items: Sequence[Any]) -> list[Any]:
        return list(items)

    def collate(self, items: Sequence[Any]) -> Any:
        time.sleep(float(os.environ.get(DELAY_ENV, "0.2")))
        return list(items)


def slow_collate_echo() -> SlowCollateEcho:
    return SlowCollateEcho()


class StallOnceEcho(RecordingEcho):
    """The first time it sees the input "stall", its ``validate`` (which runs on the worker's
    event loop) blocks the whole loop for INFERPOOL_TEST_DELAY_S: no poll, no heartbeat, as
    a long GC pause or a swapped-out process would. Later deliveries pass at once."""

    stalled = False

    def validate(self, inputs: Any, params: Mapping[str, Any]) -> Any:
        if inputs == "stall" and not StallOnceEcho.stalled:
            StallOnceEcho.stalled = True
            time.sleep(float(os.environ.get(DELAY_ENV, "0.2")))
        return inputs


def stall_once_echo() -> StallOnceEcho:
    return StallOnceEcho()


class GatedPrepareEcho(RecordingEcho):
    """Has a ``prepare`` hook (tokenization, for text models) that blocks at the gate: the
    worker's fetch loop awaits it, with the fetched chunk tracked but not yet queued."""

    def prepare(self, items: Sequence[Any]) -> list[Any]:
        _wait_at_gate()
        return list(items)


def gated_prepare_echo() -> GatedPrepareEcho:
    return GatedPrepareEcho()


class PacedEcho(RecordingEcho):
    """Takes ``batch_s`` per batch (a sleep, which releases the GIL), whatever its size: a
    model of known capacity (max_batch_size / batch_s requests per second)."""

    def __init__(self, batch_s: float = 0.02) -> None:
        super().__init__()
        self.batch_s = batch_s

    def forward(self, batch: Any) -> Any:
        time.sleep(self.batch_s)
        return super().forward(batch)
