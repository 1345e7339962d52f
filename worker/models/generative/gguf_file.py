"""GgufFile: a GGUF file's metadata and its tensors, dequantized to float32 torch tensors.

Our own reader rather than the ``gguf`` package's or transformers' GGUF loading: on this
file (SmolLM2-135M, 49,152 tokens, 48,900 merges) ``gguf.GGUFReader`` spends ~7 s building
numpy views of every vocabulary string, and transformers' ``from_pretrained(gguf_file=)``
reads the file three times (config, tokenizer, weights) in ~27 s and needs ``accelerate``
and ``gguf`` besides. This one reads the header with ``struct`` in ~0.15 s and dequantizes
the tensors with torch in about a second.

Format (GGUF v2/v3, little-endian): magic ``GGUF``, version u32, tensor count u64,
metadata count u64; each metadata entry a string key, a u32 value type and the value; each
tensor a name, its dimension count u32, dimensions u64 (innermost first), ggml type u32,
offset u64 into the data section, which starts at the next multiple of
``general.alignment`` (default 32).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inferpool.errors import ConfigurationError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
_STRING, _ARRAY = 8, 9
_SCALAR_FORMATS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}

# ggml tensor types this reader dequantizes: type id -> (elements per block, bytes per block)
F32, F16, Q4_0, Q4_1, Q8_0, BF16 = 0, 1, 2, 3, 8, 30
BLOCKS = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q8_0: (32, 34)}
TYPE_NAMES = {F32: "F32", F16: "F16", BF16: "BF16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q8_0: "Q8_0"}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # in torch order (outermost first)
    ggml_type: int
    offset: int  # into the data section

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    def nbytes(self) -> int:
        per_block, block_bytes = BLOCKS[self.ggml_type]
        return self.elements // per_block * block_bytes


class _Cursor:
    """Reads values forward from a buffer."""

    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer
        self.pos = 0

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        text = bytes(self.buffer[self.pos : self.pos + length]).decode("utf-8", "replace")
        self.pos += length
        return text

    def value(self, value_type: int) -> Any:
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if item_type == _STRING:
                return [self.string() for _ in range(count)]
            fmt = _SCALAR_FORMATS[item_type]
            width = struct.calcsize(fmt)
            values = list(struct.unpack_from(f"<{count}{fmt[1]}", self.buffer, self.pos))
            self.pos += count * width
            return values
        if value_type not in _SCALAR_FORMATS:
            raise ValueError(f"unknown GGUF value type {value_type}")
        return self.scalar(_SCALAR_FORMATS[value_type])


class GgufFile:
    """An open GGUF file (memory-mapped); ``metadata`` by key, ``tensors`` by name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"cannot read GGUF file {path}: {error}") from None
        try:
            self.metadata, self.tensors, self._data_start = self._read_header()
        except (struct.error, ValueError, KeyError, IndexError) as error:
            raise ConfigurationError(
                f"{path} is not a GGUF file this reader knows: {error}"
            ) from None

    def _read_header(self) -> tuple[dict[str, Any], dict[str, TensorInfo], int]:
        cursor = _Cursor(memoryview(self._map))
        if bytes(cursor.buffer[:4]) != MAGIC:
            raise ValueError("no GGUF magic")
        cursor.pos = 4
        version = cursor.scalar("<I")
        if version not in VERSIONS:
            raise ValueError(f"GGUF version {version} (this reader knows {VERSIONS})")
        tensor_count, metadata_count = cursor.scalar("<Q"), cursor.scalar("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(metadata_count):
            key = cursor.string()
            metadata[key] = cursor.value(cursor.scalar("<I"))
        tensors: dict[str, TensorInfo] = {}
        for _ in range(tensor_count):
            name = cursor.string()
            dims = [cursor.scalar("<Q") for _ in range(cursor.scalar("<I"))]
            ggml_type, offset = cursor.scalar("<I"), cursor.scalar("<Q")
            tensors[name] = TensorInfo(name, tuple(reversed(dims)), ggml_type, offset)
        alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        data_start = (cursor.pos + alignment - 1) // alignment * alignment
        return metadata, tensors, data_start

    def close(self) -> None:
        self._map.close()

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as float32 (dequantized), in torch's shape order."""
        info = self.tensors[name]
        if info.ggml_type not in BLOCKS:
            raise ConfigurationError(
                f"{self.path}: tensor {name!r} has ggml type {info.ggml_type}, which this "
                f"reader does not dequantize (it knows {', '.join(TYPE_NAMES.values())})"
            )
        start = self._data_start + info.offset
        # a copy: torch wants a writable buffer, and the mapping is read-only
        data = bytearray(self._map[start : start + info.nbytes()])
        raw = torch.frombuffer(data, dtype=torch.uint8)
        return dequantize(raw, info.ggml_type).reshape(info.shape)


def _half(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 scalar at byte ``start`` of each block, as a float32 column."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).float()


def dequantize(raw: torch.Tensor, ggml_type: int) -> torch.Tensor:
    """Flat float32 values of ``raw`` (the tensor's bytes) stored as ``ggml_type``."""
    if ggml_type == F32:
        return raw.view(torch.float32).clone()
    if ggml_type == F16:
        return raw.view(torch.float16).float()
    if ggml_type == BF16:
        return raw.view(torch.bfloat16).float()
    blocks = raw.reshape(-1, BLOCKS[ggml_type][1])
    if ggml_type == Q8_0:  # d (f16), 32 x int8: d * q
        return (_half(blocks, 0) * blocks[:, 2:].view(torch.int8).float()).reshape(-1)
    # Q4_0 / Q4_1: 16 bytes of nibbles, low nibbles are elements 0-15, high ones 16-31
    packed = blocks[:, -16:]
    nibbles = torch.cat([packed & 0x0F, packed >> 4], dim=1).float()
    if ggml_type == Q4_0:  # d (f16): d * (q - 8)
        return (_half(blocks, 0) * (nibbles - 8)).reshape(-1)
    return (_half(blocks, 0) * nibbles + _half(blocks, 2)).reshape(-1)  # Q4_1: d * q + m
