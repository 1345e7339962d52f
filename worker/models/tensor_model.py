"""TensorModel: a TorchScript or ``torch.export`` program served as tensor -> tensor.

Each request's input is one tensor of the configured dtype and shape (without the batch
dimension); the batch is their stack; each output row goes back as a tensor. Loading uses
``torch.jit.load`` / ``torch.export.load``, never a plain pickle.

Precision: fp32 on the CPU; on CUDA, ``auto`` tries fp16 then bf16 under the same accuracy
guard as every other model (``precision.choose``): a fixed, seeded batch of random inputs
runs through fp32 and the candidate, and the candidate is served only if its outputs agree
(cosine per row). Programs with integer inputs run in fp32.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from inferpool.errors import ConfigurationError, InvalidInput
from inferpool.logs import get_logger
from inferpool.protocol.wire import WireTensor
from worker.models.base import ListModel
from worker.models.precision import AccuracyFloor, Choice, Precision, choose

log = get_logger("worker.models.tensor_model")

CHECK_ROWS = 32
CHECK_SEED = 8
_REDUCED = {Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}


def _modes(requested: Precision, device: torch.device, floating: bool) -> list[Precision]:
    if requested is Precision.AUTO:
        requested = Precision.FP16 if device.type == "cuda" and floating else Precision.NONE
    if requested is Precision.NONE:
        return [Precision.NONE]
    if requested not in _REDUCED or device.type != "cuda" or not floating:
        raise ConfigurationError(
            f"precision {requested.value!r} is not offered for TorchScript/exported programs "
            "here: they run in fp32 on the CPU, and in fp16/bf16 only on CUDA with floating "
            "inputs"
        )
    return [requested, Precision.BF16, Precision.NONE] if requested is Precision.FP16 else [
        requested, Precision.NONE]


class TensorModel(ListModel):
    def __init__(
        self,
        name: str,
        version: str,
        module: Any,
        device: torch.device,
        input_dtype: str,
        input_shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.name, self.version = name, version
        self.module, self.device, self.dtype = module, device, dtype
        self.input_dtype, self.input_shape = input_dtype, tuple(input_shape)
        self.choice: Choice | None = None

    @classmethod
    def load(
        cls,
        name: str,
        version: str | None,
        kind: str,
        path: Path,
        device: torch.device,
        input_dtype: str,
        input_shape: Sequence[int],
        precision: Precision = Precision.AUTO,
    ) -> TensorModel:
        if kind == "torchscript":
            load_script: Any = torch.jit.load
            module: Any = load_script(str(path), map_location=device).eval()
        else:
            module = torch.export.load(str(path)).module().to(device)
        reference = cls(name, version or path.stem, module, device, input_dtype, input_shape)
        floating = getattr(torch, input_dtype).is_floating_point
        modes = _modes(precision, device, floating)
        if modes == [Precision.NONE]:  # nothing to compare: fp32 is the reference itself
            reference.choice = Choice(Precision.NONE, None, ())
            return reference
        choice, model = choose(modes, reference.in_precision, _check_outputs, AccuracyFloor())
        model.choice = choice
        for mode, reason in choice.refused:
            log.warning("model.precision_refused", model=name, precision=mode.value, reason=reason)
        return model

    def in_precision(self, precision: Precision) -> TensorModel:
        """This program in ``precision`` (fp32: itself)."""
        if precision is Precision.NONE:
            return self
        dtype = _REDUCED[precision]
        module = copy.deepcopy(self.module).to(self.device, dtype)
        return TensorModel(self.name, self.version, module, self.device, self.input_dtype,
                           self.input_shape, dtype)

    def check_inputs(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(CHECK_SEED)
        return torch.randn((CHECK_ROWS, *self.input_shape), generator=generator).to(
            getattr(torch, self.input_dtype)
        )

    def validate(self, inputs: Any, params: Mapping[str, Any]) -> Any:
        if not isinstance(inputs, WireTensor):
            raise InvalidInput(f"model {self.name!r} expects a tensor")
        if inputs.dtype != self.input_dtype or inputs.shape != self.input_shape:
            raise InvalidInput(
                f"model {self.name!r} expects {self.input_dtype} of shape "
                f"{list(self.input_shape)}, got {inputs.dtype} of shape {list(inputs.shape)}"
            )
        return inputs.to_torch()

    def collate(self, items: Sequence[Any]) -> Any:
        batch = torch.stack(list(items))
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.dtype) if batch.is_floating_point() else batch

    def forward(self, batch: Any) -> Any:
        with torch.inference_mode():
            outputs = self.module(batch)
            return outputs.float().to("cpu") if self.dtype != torch.float32 else outputs.to("cpu")

    def split(self, outputs: Any, count: int) -> Sequence[Any]:
        return [WireTensor.from_torch(row) for row in outputs]


def _check_outputs(model: TensorModel) -> torch.Tensor:
    """The program's outputs on the fixed check inputs, one L2-normalized row per input."""
    outputs = model.forward(model.collate(list(model.check_inputs())))
    rows = outputs.reshape(outputs.shape[0], -1).double()
    return torch.nn.functional.normalize(rows, dim=-1)
