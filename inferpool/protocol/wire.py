"""The bytes on the wire: msgpack (default) or JSON, and how a tensor travels in each.

A tensor is msgpack extension type 1 whose data is a msgpack array ``[dtype, shape]``
followed directly by the raw little-endian, C-ordered element bytes. In JSON it is an
object ``{"$tensor": {"dtype": ..., "shape": [...], "data": "<base64>"}}``.
See docs/protocol.md.
"""

from __future__ import annotations

import base64
import enum
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from inferpool.errors import InvalidInput, MalformedRequest
from inferpool.protocol.headers import CONTENT_TYPE_HEADER

if TYPE_CHECKING:
    import torch

TENSOR_EXT_TYPE = 1
MAX_TENSOR_DIMS = 8

#: dtype name -> element size in bytes. The names are numpy's / torch's.
DTYPE_SIZES: dict[str, int] = {
    "bool": 1,
    "uint8": 1,
    "int8": 1,
    "int16": 2,
    "int32": 4,
    "int64": 8,
    "float16": 2,
    "bfloat16": 2,
    "float32": 4,
    "float64": 8,
}


class Encoding(enum.Enum):
    """How a record's value is encoded; told apart by the ``content-type`` header."""

    MSGPACK = "application/msgpack"
    JSON = "application/json"

    @property
    def content_type(self) -> bytes:
        return self.value.encode()

    @classmethod
    def from_headers(
        cls, headers: Iterable[tuple[str, bytes | None]]
    ) -> Encoding:
        """The encoding a Kafka record declares; msgpack when it declares none (a header
        with a null value counts as absent)."""
        for key, value in headers:
            if key.lower() == CONTENT_TYPE_HEADER and value is not None:
                known = _BY_HEADER_VALUE.get(value)  # the usual case: one dict lookup
                if known is not None:
                    return known
                text = value.decode("ascii", "replace").split(";")[0].strip().lower()
                for encoding in cls:
                    if encoding.value == text:
                        return encoding
                raise MalformedRequest(
                    f"unsupported content-type {text!r}; "
                    "use application/msgpack or application/json"
                )
        return cls.MSGPACK

    @classmethod
    def sniff(cls, data: bytes) -> Encoding:
        """Tell a stored value's encoding from its first byte (JSON objects start with '{')."""
        return cls.JSON if data[:1] == b"{" else cls.MSGPACK


_BY_HEADER_VALUE: dict[bytes, Encoding] = {e.content_type: e for e in Encoding}


@dataclass(frozen=True, slots=True, eq=False)
class WireTensor:
    """A dense tensor as it travels: dtype name, shape, and its raw element bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes | memoryview

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_SIZES:
            raise InvalidInput(
                f"unsupported tensor dtype {self.dtype!r}; use one of {sorted(DTYPE_SIZES)}"
            )
        if len(self.shape) > MAX_TENSOR_DIMS or any(
            not isinstance(dim, int) or isinstance(dim, bool) or dim < 0 for dim in self.shape
        ):
            raise InvalidInput(f"invalid tensor shape {list(self.shape)!r}")
        expected = math.prod(self.shape) * DTYPE_SIZES[self.dtype]
        if expected != len(self.data):
            raise InvalidInput(
                f"tensor of dtype {self.dtype} and shape {list(self.shape)} needs {expected} "
                f"bytes, got {len(self.data)}"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WireTensor):
            return NotImplemented
        return (self.dtype, self.shape, bytes(self.data)) == (
            other.dtype,
            other.shape,
            bytes(other.data),
        )

    def __hash__(self) -> int:
        return hash((self.dtype, self.shape, bytes(self.data)))

    @classmethod
    def from_torch(cls, tensor: torch.Tensor) -> WireTensor:
        import torch

        contiguous = tensor.detach().to("cpu").contiguous()
        dtype = str(contiguous.dtype).removeprefix("torch.")
        raw = (
            contiguous.view(torch.uint8)
            if contiguous.dim()
            else contiguous.reshape(1).view(torch.uint8)
        )
        return cls(dtype, tuple(contiguous.shape), raw.numpy().tobytes())

    def to_torch(self) -> torch.Tensor:
        import torch

        dtype = getattr(torch, self.dtype)
        if not self.data:
            return torch.empty(self.shape, dtype=dtype)
        flat = torch.frombuffer(bytearray(self.data), dtype=dtype)
        return flat.reshape(self.shape)


# --- msgpack ----------------------------------------------------------------------------


def _msgpack_default(value: object) -> msgpack.ExtType:
    if isinstance(value, WireTensor):
        header = msgpack.packb([value.dtype, list(value.shape)])
        return msgpack.ExtType(TENSOR_EXT_TYPE, header + bytes(value.data))
    raise TypeError(f"cannot encode a value of type {type(value).__name__}")


def _msgpack_ext_hook(code: int, data: bytes) -> WireTensor:
    if code != TENSOR_EXT_TYPE:
        raise InvalidInput(f"unknown msgpack extension type {code}")
    unpacker = msgpack.Unpacker(max_buffer_size=len(data) or 1)
    unpacker.feed(data)
    try:
        header = unpacker.unpack()
    except Exception as error:
        raise InvalidInput(f"tensor header is not msgpack: {error}") from None
    if (
        not isinstance(header, list)
        or len(header) != 2
        or not isinstance(header[0], str)
        or not isinstance(header[1], list)
    ):
        raise InvalidInput("tensor header must be [dtype: str, shape: [int, ...]]")
    return WireTensor(header[0], tuple(header[1]), memoryview(data)[unpacker.tell() :])


def pack_msgpack(value: object) -> bytes:
    result: bytes = msgpack.packb(value, default=_msgpack_default, use_bin_type=True)
    return result


# How a msgpack timestamp (extension type -1) starts: fixext 4, fixext 8, ext 8 of 12 bytes.
_TIMESTAMP_HEADS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _holds_timestamp(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, msgpack.Timestamp):
            return True
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
    return False


def unpack_msgpack(data: bytes) -> Any:
    """Decode msgpack; tensors come back as WireTensor views into ``data`` (no copy).

    msgpack decodes its timestamp extension (-1) by itself, never through ``ext_hook``; the
    protocol allows no extension but the tensor, so a value holding one is refused. The
    walk that proves it runs only when the bytes could hold one (a fast substring test)."""
    value = msgpack.unpackb(data, ext_hook=_msgpack_ext_hook, raw=False, strict_map_key=True)
    maybe_timestamp = (
        _TIMESTAMP_HEADS[0] in data or _TIMESTAMP_HEADS[1] in data or _TIMESTAMP_HEADS[2] in data
    )
    if maybe_timestamp and _holds_timestamp(value):
        raise InvalidInput(
            "msgpack timestamp extension (-1) is not part of the protocol; "
            "send times as integer epoch milliseconds"
        )
    return value


# --- JSON -------------------------------------------------------------------------------

_TENSOR_KEY = "$tensor"


def _json_default(value: object) -> object:
    if isinstance(value, WireTensor):
        return {
            _TENSOR_KEY: {
                "dtype": value.dtype,
                "shape": list(value.shape),
                "data": base64.b64encode(value.data).decode("ascii"),
            }
        }
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode a value of type {type(value).__name__}")


def _json_object_hook(value: dict[str, Any]) -> object:
    spec = value.get(_TENSOR_KEY)
    if spec is None or len(value) != 1:
        return value
    if not isinstance(spec, dict) or not {"dtype", "shape", "data"} <= spec.keys():
        raise InvalidInput('"$tensor" needs "dtype", "shape" and "data" (base64)')
    if not isinstance(spec["dtype"], str) or not isinstance(spec["shape"], list):
        raise InvalidInput('"$tensor": dtype must be a string and shape a list of integers')
    try:
        data = base64.b64decode(spec["data"], validate=True)
    except (ValueError, TypeError):
        raise InvalidInput('"$tensor": data is not valid base64') from None
    return WireTensor(spec["dtype"], tuple(spec["shape"]), data)


def pack_json(value: object) -> bytes:
    return json.dumps(value, default=_json_default, separators=(",", ":"), allow_nan=False).encode()


def _refuse_constant(name: str) -> Any:
    raise InvalidInput(f"JSON {name} is not allowed (RFC 8259 has no NaN or Infinity)")


def unpack_json(data: bytes) -> Any:
    return json.loads(data, object_hook=_json_object_hook, parse_constant=_refuse_constant)


def pack(value: object, encoding: Encoding) -> bytes:
    return pack_msgpack(value) if encoding is Encoding.MSGPACK else pack_json(value)


def unpack(data: bytes, encoding: Encoding) -> Any:
    """Decode ``data``; any failure other than a bad tensor becomes MalformedRequest."""
    try:
        return unpack_msgpack(data) if encoding is Encoding.MSGPACK else unpack_json(data)
    except InvalidInput:
        raise
    except RecursionError:
        raise MalformedRequest(f"{encoding.name.lower()} value is nested too deeply") from None
    except Exception as error:
        raise MalformedRequest(
            f"value is not valid {encoding.name.lower()}: {type(error).__name__}"
        ) from None
