"""Building a causal LM in each precision mode the guard may try.

CPU: fp32, and int8 (dynamic int8 ``nn.Linear`` layers, fbgemm: 1.65x fp32's speed at 16
sequences here) or bf16 (half the memory; fast only where the CPU has bf16 instructions).
CUDA: fp16, bf16, fp32. Every reduced mode must pass the guard (``guard.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from worker.models.generative.guard import Candidate
from worker.models.precision import Precision

#: The layers int8 leaves in fp32: the output projection (its argmax is the answer).
INT8_KEEP_FP32 = (r"lm_head$",)


def cpu_ladder(requested: Precision) -> list[Precision]:
    """The modes to try on the CPU, fastest first; fp32 ends it."""
    order = {
        Precision.AUTO: [Precision.INT8],
        Precision.INT8: [Precision.INT8],
        Precision.BF16: [Precision.BF16],
        Precision.FP16: [Precision.FP16],
        Precision.INT8_WEIGHT_ONLY: [Precision.INT8_WEIGHT_ONLY],
        Precision.NONE: [],
    }[requested]
    return [*order, Precision.NONE]


def cuda_ladder(requested: Precision) -> list[Precision]:
    order = {
        Precision.AUTO: [Precision.FP16, Precision.BF16],
        Precision.FP16: [Precision.FP16, Precision.BF16],
        Precision.BF16: [Precision.BF16],
        Precision.INT8: [Precision.INT8],
        Precision.INT8_WEIGHT_ONLY: [Precision.INT8_WEIGHT_ONLY],
        Precision.NONE: [],
    }[requested]
    return [*order, Precision.NONE]


def ladder(requested: Precision, device: torch.device) -> list[Precision]:
    return cuda_ladder(requested) if device.type == "cuda" else cpu_ladder(requested)


def build_candidate(
    fp32_model: Any,
    mode: Precision,
    device: torch.device,
    calibration: Sequence[Sequence[int]],
) -> Candidate:
    """``fp32_model`` (on the CPU, left untouched unless ``mode`` is fp32 on the CPU) in
    ``mode`` on ``device``; raises when the mode is not available there."""
    if mode is Precision.NONE:
        model = fp32_model if device.type == "cpu" else copy.deepcopy(fp32_model).to(device)
        return Candidate(model, torch.float32, device)
    if mode in (Precision.FP16, Precision.BF16):
        dtype = torch.float16 if mode is Precision.FP16 else torch.bfloat16
        if device.type != "cuda" and mode is Precision.FP16:
            raise ValueError("fp16 is a CUDA mode (fp16 matmuls are slow on this CPU)")
        return Candidate(copy.deepcopy(fp32_model).to(device=device, dtype=dtype), dtype, device)
    if mode is Precision.INT8:
        if device.type != "cpu":
            raise ValueError("int8 (dynamic, fbgemm) is a CPU mode")
        from worker.models.quantization import quantize_int8

        batches = [{"input_ids": torch.tensor([list(ids)])} for ids in calibration]
        model = quantize_int8(
            fp32_model, batches, smooth_layers=(), activation_ranges="dynamic",
            keep_fp32=INT8_KEEP_FP32,
        )
        return Candidate(model, torch.float32, device)
    raise ValueError(f"{mode.value} is not offered for generative models")
