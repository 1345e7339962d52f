"""TensorModel: a TorchScript or ``torch.export`` program served as tensor -> tensor.

Each request's input is one tensor of the configured dtype and shape (without the batch
dimension); the batch is their stack; each output row goes back as a tensor. Loading uses
``torch.jit.load`` / ``torch.export.load``, never a plain pickle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from inferpool.errors import ConfigurationError, InvalidInput
from inferpool.protocol.wire import WireTensor
from worker.models.base import ListModel


class TensorModel(ListModel):
    def __init__(
        self,
        name: str,
        version: str,
        module: Any,
        device: torch.device,
        input_dtype: str,
        input_shape: Sequence[int],
    ) -> None:
        self.name, self.version = name, version
        self.module, self.device = module, device
        self.input_dtype, self.input_shape = input_dtype, tuple(input_shape)

    @classmethod
    def load(
        cls,
        name: str,
        version: str | None,
        kind: str,
        path: Path,
        device: torch.device,
        options: Mapping[str, Any],
    ) -> TensorModel:
        if not path.is_file():
            raise ConfigurationError(f"model {name!r}: no such file {path}")
        if kind == "torchscript":
            load_script: Any = torch.jit.load
            module: Any = load_script(str(path), map_location=device).eval()
        else:
            module = torch.export.load(str(path)).module().to(device)
        try:
            dtype, shape = str(options["input_dtype"]), list(options["input_shape"])
        except KeyError as missing:
            raise ConfigurationError(
                f"model {name!r}: options.{missing.args[0]} is required for {kind} models "
                '(e.g. options = {input_dtype = "float32", input_shape = [4]})'
            ) from None
        return cls(name, version or path.stem, module, device, dtype, shape)

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
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    def forward(self, batch: Any) -> Any:
        with torch.inference_mode():
            return self.module(batch).to("cpu")

    def split(self, outputs: Any, count: int) -> Sequence[Any]:
        return [WireTensor.from_torch(row) for row in outputs]
