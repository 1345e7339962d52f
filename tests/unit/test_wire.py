"""inferpool.protocol.wire: msgpack and JSON values, tensors in both, errors for bad bytes."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import msgpack
import pytest
import torch

from inferpool.errors import InvalidInput, MalformedRequest
from inferpool.protocol.wire import (
    DTYPE_SIZES,
    MAX_TENSOR_DIMS,
    TENSOR_EXT_TYPE,
    Encoding,
    WireTensor,
    pack,
    pack_json,
    pack_msgpack,
    unpack,
    unpack_json,
)

ENCODINGS = list(Encoding)

TORCH_TENSORS = {
    "float32 matrix": torch.tensor([[1.0, -2.5], [3.25, 4.0]]),
    "float64 vector": torch.tensor([1e300, -0.0], dtype=torch.float64),
    "float16": torch.tensor([0.5, 65504.0], dtype=torch.float16),
    "bfloat16": torch.tensor([1.5, -3.0, 1e30], dtype=torch.bfloat16),
    "int64": torch.tensor([-(2**63), 2**63 - 1]),
    "int32": torch.tensor([[-7], [9]], dtype=torch.int32),
    "int16": torch.tensor([-300, 300], dtype=torch.int16),
    "int8": torch.tensor([-128, 127], dtype=torch.int8),
    "uint8": torch.tensor([0, 255], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "scalar float": torch.tensor(3.5),
    "scalar bool": torch.tensor(True),
    "empty": torch.zeros(0),
    "empty rows": torch.zeros(2, 0, dtype=torch.int32),
    "transposed (not contiguous)": torch.arange(6, dtype=torch.int16).reshape(2, 3).T,
}


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.name)
@pytest.mark.parametrize("tensor", TORCH_TENSORS.values(), ids=TORCH_TENSORS.keys())
def test_torch_tensor_round_trips(tensor: torch.Tensor, encoding: Encoding) -> None:
    decoded = unpack(pack({"x": WireTensor.from_torch(tensor)}, encoding), encoding)["x"]
    assert isinstance(decoded, WireTensor)
    result = decoded.to_torch()
    assert result.dtype == tensor.dtype
    assert result.shape == tensor.shape
    assert torch.equal(result, tensor)


def test_every_dtype_has_a_torch_dtype_of_its_size() -> None:
    for name, size in DTYPE_SIZES.items():
        assert getattr(torch, name).itemsize == size


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: e.name)
def test_nested_values_round_trip(encoding: Encoding) -> None:
    tensor = WireTensor("float32", (2,), struct.pack("<2f", 1.0, 2.0))
    value = {
        "text": "héllo",
        "numbers": [0, -1, 2**40, 1.5, True, None],
        "nested": {"tensors": [tensor, WireTensor("uint8", (0,), b"")]},
    }
    assert unpack(pack(value, encoding), encoding) == value


def test_tensor_layout_is_ext_type_1_header_then_raw_little_endian_bytes() -> None:
    tensor = WireTensor("int16", (2,), struct.pack("<2h", 1, -2))
    ext = msgpack.unpackb(pack_msgpack(tensor))
    assert ext.code == TENSOR_EXT_TYPE
    header = msgpack.packb(["int16", [2]])
    assert ext.data == header + b"\x01\x00\xfe\xff"


def test_json_tensor_form() -> None:
    tensor = WireTensor("uint8", (3,), b"\x01\x02\x03")
    data = base64.b64encode(b"\x01\x02\x03").decode()
    assert json.loads(pack_json(tensor)) == {
        "$tensor": {"dtype": "uint8", "shape": [3], "data": data}
    }


def test_msgpack_tensor_is_a_view_not_a_copy() -> None:
    payload = bytes(range(256)) * 64
    data = pack_msgpack({"x": WireTensor("uint8", (len(payload),), payload)})
    decoded = unpack(data, Encoding.MSGPACK)["x"]
    assert isinstance(decoded.data, memoryview)
    # The view covers the element bytes inside the extension's buffer (header included).
    assert isinstance(decoded.data.obj, bytes)
    assert len(decoded.data.obj) > len(payload)
    assert decoded.data == payload


# --- tensor validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "shape", "data", "message"),
    [
        ("float32", (2,), b"\x00" * 7, "needs 8 bytes, got 7"),
        ("float32", (), b"", "needs 4 bytes, got 0"),
        ("int8", (0,), b"\x00", "needs 0 bytes, got 1"),
        ("complex64", (1,), b"\x00" * 8, "unsupported tensor dtype"),
        ("Float32", (1,), b"\x00" * 4, "unsupported tensor dtype"),
        ("uint8", (-1,), b"", "invalid tensor shape"),
        ("uint8", (1.0,), b"\x00", "invalid tensor shape"),
        ("uint8", (True,), b"\x00", "invalid tensor shape"),
        ("uint8", ("1",), b"\x00", "invalid tensor shape"),
        ("uint8", (1,) * (MAX_TENSOR_DIMS + 1), b"\x00", "invalid tensor shape"),
    ],
)
def test_bad_tensor_is_invalid_input(
    dtype: str, shape: tuple[Any, ...], data: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        WireTensor(dtype, shape, data)


def _ext(payload: bytes, code: int = TENSOR_EXT_TYPE) -> bytes:
    result: bytes = msgpack.packb({"x": msgpack.ExtType(code, payload)})
    return result


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_ext(msgpack.packb(["float32", [2]]) + b"\x00" * 4), "needs 8 bytes, got 4"),
        (_ext(msgpack.packb(["float99", [1]]) + b"\x00"), "unsupported tensor dtype"),
        (_ext(msgpack.packb(["uint8", [-1]])), "invalid tensor shape"),
        (_ext(msgpack.packb(["uint8", ["a"]])), "invalid tensor shape"),
        (_ext(msgpack.packb(["uint8"])), r"tensor header must be \[dtype"),
        (_ext(msgpack.packb({"dtype": "uint8"})), r"tensor header must be \[dtype"),
        (_ext(b""), "tensor header is not msgpack"),
        (_ext(b"\xc1"), "tensor header is not msgpack"),
        (_ext(msgpack.packb(["uint8", [1]]) + b"\x00", code=7), "unknown msgpack extension type 7"),
    ],
)
def test_bad_msgpack_tensor_is_invalid_input(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        unpack(data, Encoding.MSGPACK)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"dtype": "uint8", "shape": [1]}, "needs"),
        ({"dtype": "uint8", "shape": [1], "data": "***"}, "not valid base64"),
        ({"dtype": "uint8", "shape": [1], "data": 5}, "not valid base64"),
        ({"dtype": 1, "shape": [1], "data": "AA=="}, "dtype must be a string"),
        ({"dtype": "uint8", "shape": 1, "data": "AA=="}, "shape a list"),
        ({"dtype": "uint8", "shape": [2], "data": "AA=="}, "needs 2 bytes, got 1"),
        ({"dtype": "int4", "shape": [1], "data": "AA=="}, "unsupported tensor dtype"),
        ("not a map", "needs"),
    ],
)
def test_bad_json_tensor_is_invalid_input(spec: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        unpack_json(json.dumps({"x": {"$tensor": spec}}).encode())


def test_json_object_with_more_than_the_tensor_key_stays_a_map() -> None:
    value = {"$tensor": 1, "other": 2}
    assert unpack_json(json.dumps(value).encode()) == value


# --- malformed bytes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (b"", Encoding.MSGPACK),
        (b"\xc1", Encoding.MSGPACK),  # a byte msgpack never uses
        (msgpack.packb({"a": [1, 2, 3]})[:-1], Encoding.MSGPACK),  # truncated
        (msgpack.packb(1) + msgpack.packb(2), Encoding.MSGPACK),  # extra data
        (msgpack.packb({1: 2}), Encoding.MSGPACK),  # a map key that is not a string
        (b"\xa2\xff\xfe", Encoding.MSGPACK),  # a string that is not UTF-8
        (b"", Encoding.JSON),
        (b"{", Encoding.JSON),
        (b'{"a": 1} x', Encoding.JSON),
        (b'"\xff"', Encoding.JSON),
        (b"[" * 100_000 + b"]" * 100_000, Encoding.JSON),
        (b"\x91" * 100_000 + b"\xc0", Encoding.MSGPACK),
    ],
)
def test_malformed_bytes_are_malformed_request(data: bytes, encoding: Encoding) -> None:
    with pytest.raises(MalformedRequest):
        unpack(data, encoding)


def test_unencodable_value_is_a_type_error() -> None:
    for encoding in ENCODINGS:
        with pytest.raises(TypeError, match="cannot encode a value of type object"):
            pack({"x": object()}, encoding)


# --- content type -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], Encoding.MSGPACK),
        ([("traceparent", b"00-x")], Encoding.MSGPACK),
        ([("content-type", b"application/msgpack")], Encoding.MSGPACK),
        ([("Content-Type", b"application/json; charset=utf-8")], Encoding.JSON),
        ((("content-type", b"APPLICATION/JSON"),), Encoding.JSON),
    ],
)
def test_encoding_from_headers(headers: Any, expected: Encoding) -> None:
    assert Encoding.from_headers(headers) is expected


def test_unsupported_content_type_is_malformed_request() -> None:
    with pytest.raises(MalformedRequest, match="unsupported content-type 'text/plain'"):
        Encoding.from_headers([("content-type", b"text/plain")])


def test_sniff_tells_stored_json_from_msgpack() -> None:
    assert Encoding.sniff(pack_json({"a": 1})) is Encoding.JSON
    assert Encoding.sniff(pack_msgpack({"a": 1})) is Encoding.MSGPACK
    assert Encoding.sniff(b"") is Encoding.MSGPACK


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_are_refused(literal: str) -> None:
    with pytest.raises(InvalidInput, match=literal):
        unpack(f'{{"inputs":[1,{literal}]}}'.encode(), Encoding.JSON)


@pytest.mark.parametrize(
    "stamp",
    [
        msgpack.Timestamp(1, 0),  # fixext 4
        msgpack.Timestamp(1, 5),  # fixext 8
        msgpack.Timestamp(-1, 5),  # ext 8, 12 bytes
    ],
)
def test_msgpack_timestamps_are_refused_wherever_they_are(stamp: msgpack.Timestamp) -> None:
    for value in (stamp, [1, stamp], {"a": {"b": [stamp]}}):
        with pytest.raises(InvalidInput, match="timestamp"):
            unpack(msgpack.packb(value), Encoding.MSGPACK)


def test_bytes_that_only_look_like_a_timestamp_are_fine() -> None:
    value = {"bin": b"\xd6\xff\xd7\xff\xc7\x0c\xff", "s": "\u00ff"}
    assert unpack(msgpack.packb(value, use_bin_type=True), Encoding.MSGPACK) == value
