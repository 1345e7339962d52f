"""Which device a model runs on: ``auto`` (CUDA when available, else the CPU), ``cpu``,
``cuda`` or ``cuda:N``. Chosen the same way for every loader."""

from __future__ import annotations

import torch

from inferpool.errors import ConfigurationError


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {requested!r} was asked for but CUDA is not available")
    return device
