"""Hostile bytes into Intake.admit: every record ends as a PendingRequest or as a Rejection
carrying a RequestError -- never an exception that escapes (it would end the worker's fetch
loop) -- and decoding a 1 KB record never costs more than a few MB of memory. Nothing is
ever unpickled. Admitted requests can always be answered (their result made and encoded).
"""

from __future__ import annotations

import base64
import json
import math
import pickle
import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
import testing_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_stubs import Record

from inferpool.errors import RequestError
from inferpool.protocol import encode_or_explain
from inferpool.protocol.wire import DTYPE_SIZES, TENSOR_EXT_TYPE, Encoding, pack_msgpack
from worker.admission.intake import Intake
from worker.answers import Answers
from worker.models.echo import EchoModel
from worker.models.registry import ModelRegistry
from worker.offsets import OffsetToken, TopicPartition
from worker.request import PendingRequest, Rejection

TOKEN = OffsetToken(TopicPartition("requests", 0), 1, 0)
REGISTRY = ModelRegistry([EchoModel(), testing_models.VectorModel()])
INTAKE = Intake(REGISTRY, max_request_bytes=1_048_576)
MSGPACK = [("content-type", b"application/msgpack")]
JSON = [("content-type", b"application/json")]
MEMORY_LIMIT = 4 * 1024 * 1024  # bytes of peak allocation while admitting a 1 KB record
NOW_MS = 1_700_000_000_000

fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def admit(value: bytes | None, headers: Any = (), key: bytes | None = b"req-1") -> Any:
    """Admit one record and check the property; returns the outcome."""
    outcome = INTAKE.admit(Record(value, key, list(headers)), TOKEN, 100.0, NOW_MS)
    assert isinstance(outcome, PendingRequest | Rejection), outcome
    if isinstance(outcome, Rejection):
        assert isinstance(outcome.error, RequestError), outcome.error
        assert outcome.error.code and str(outcome.error)
    return outcome


def answer(outcome: PendingRequest | Rejection) -> None:
    """Every request the intake admits can be answered: its result made and encoded."""
    answers = Answers("w-1")
    if isinstance(outcome, Rejection):
        if outcome.request_id is not None:
            encode_or_explain(answers.rejected(outcome), outcome.encoding)
        return
    model = REGISTRY.get(outcome.model)
    record = answers.for_output(outcome, model, outcome.item, 1, 100.0, 0.001)
    encode_or_explain(record, outcome.encoding)
    encode_or_explain(answers.expired(outcome), outcome.encoding)


def peak_bytes(value: bytes, headers: Any) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        admit(value, headers)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- values -----------------------------------------------------------------------------

finite_or_not = st.floats(allow_nan=True, allow_infinity=True)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | finite_or_not
    | st.text(max_size=20)
)


def raw_tensor(dtype: str, shape: list[Any], data: bytes) -> msgpack.ExtType:
    """A tensor extension as the wire carries it, valid or not (WireTensor would refuse)."""
    return msgpack.ExtType(TENSOR_EXT_TYPE, msgpack.packb([dtype, shape]) + data)


dtypes = st.sampled_from([*DTYPE_SIZES, "float8", "complex64", "", "object", "<f4"]) | st.text(
    max_size=8
)
shapes = st.lists(
    st.integers(-3, 2**40)
    | st.sampled_from([2**31, 2**63 - 1])
    | finite_or_not
    | st.text(max_size=2),
    max_size=10,
)
tensors = st.builds(raw_tensor, dtypes, shapes, st.binary(max_size=64))
msgpack_values = st.recursive(
    scalars | st.binary(max_size=32) | tensors,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from([1, 2, 0, -1, "1", 1.0, True, None]),
        "id": st.sampled_from(["req-1", "", "x" * 129, "has space", "{}"]) | scalars,
        "model": st.sampled_from(["echo", "vector", "nope", "", "a/b"]) | scalars,
        "inputs": msgpack_values,
        "params": msgpack_values,
        "deadline_ms": st.none()
        | st.integers(-(2**63), 2**64 - 1)
        | finite_or_not
        | st.text(max_size=4),
        "submitted_ms": st.none() | st.integers(-(2**63), 2**64 - 1) | finite_or_not,
    },
)


# float32 (4,) tensors of any 16 bytes (NaN and infinity included): what the vector takes.
vectors = st.builds(
    raw_tensor, st.just("float32"), st.just([4]), st.binary(min_size=16, max_size=16)
)

# Envelopes that pass the envelope checks, so that the models' own validation sees every
# kind of inputs (the vector model takes a float32 tensor of shape (4,) only).
wellformed = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "id": st.just("req-1"),
        "model": st.sampled_from(["echo", "vector"]),
        "inputs": vectors | tensors | msgpack_values,
    },
    optional={
        "params": st.dictionaries(st.text(max_size=8), msgpack_values, max_size=3),
        "deadline_ms": st.integers(-(2**63), 2**64 - 1),
        "submitted_ms": st.integers(-(2**63), 2**64 - 1),
    },
)


def to_json_ready(value: Any) -> Any:
    """The same value for JSON: tensors become {"$tensor": ...} objects (base64 data)."""
    if isinstance(value, msgpack.ExtType):
        header = msgpack.Unpacker()
        header.feed(value.data)
        dtype, shape = header.unpack()
        data = value.data[header.tell() :]
        return {
            "$tensor": {"dtype": dtype, "shape": shape, "data": base64.b64encode(data).decode()}
        }
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [to_json_ready(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json_ready(item) for key, item in value.items()}
    return value


# --- properties -------------------------------------------------------------------------


@fuzz
@given(st.binary(max_size=1024), st.sampled_from([MSGPACK, JSON, [], [("Content-Type", b"x")]]))
def test_random_bytes(value: bytes, headers: Any) -> None:
    answer(admit(value, headers))


@fuzz
@given(fields | wellformed)
def test_envelopes_with_wrong_types_dtypes_shapes_nan_and_inf(envelope: dict[str, Any]) -> None:
    answer(admit(msgpack.packb(envelope, use_bin_type=True), MSGPACK))
    answer(admit(json.dumps(to_json_ready(envelope)).encode(), JSON))


@fuzz
@given(fields, st.data())
def test_truncated_msgpack(envelope: dict[str, Any], data: st.DataObject) -> None:
    value = msgpack.packb(envelope, use_bin_type=True)
    cut = data.draw(st.integers(0, max(0, len(value) - 1)))
    answer(admit(value[:cut], MSGPACK))
    answer(admit(value + b"\x00", MSGPACK))  # trailing bytes


@fuzz
@given(st.integers(1, 20_000), st.sampled_from(["list", "map", "tensor-list"]))
def test_deeply_nested_values(depth: int, shape: str) -> None:
    head = b"\x84" + b"".join(
        msgpack.packb(x) for x in ("version", 1, "id", "req-1", "model", "echo", "inputs")
    )
    opener = {"list": b"\x91", "map": b"\x81\xa1k", "tensor-list": b"\x91"}[shape]
    leaf = (
        msgpack.packb(raw_tensor("float32", [1], b"\x00" * 4))
        if shape == "tensor-list"
        else (b"\xc0")
    )
    answer(admit(head + opener * depth + leaf, MSGPACK))
    nested = "[" * depth + "]" * depth if shape != "map" else '{"k":' * depth + "1" + "}" * depth
    answer(admit(f'{{"version":1,"id":"req-1","model":"echo","inputs":{nested}}}'.encode(), JSON))


HUGE_HEADERS = {
    "array32": b"\xdd" + struct.pack(">I", 2**31),
    "map32": b"\xdf" + struct.pack(">I", 2**31),
    "str32": b"\xdb" + struct.pack(">I", 2**31),
    "bin32": b"\xc6" + struct.pack(">I", 2**31),
    "ext32": b"\xc9" + struct.pack(">I", 2**31) + bytes([TENSOR_EXT_TYPE]),
    "array32-max": b"\xdd\xff\xff\xff\xff",
    "tensor-shape": msgpack.packb(raw_tensor("float32", [2**31, 2**31], b"\x00" * 8)),
    "tensor-header-array32": b"\xc7\x05\x01" + b"\xdd" + struct.pack(">I", 2**31),
}


@pytest.mark.parametrize("where", ["top", "inputs"])
@pytest.mark.parametrize("name", list(HUGE_HEADERS))
def test_huge_declared_sizes_cost_no_memory(name: str, where: str) -> None:
    header = HUGE_HEADERS[name]
    if where == "top":
        value = header
    else:
        value = (
            b"\x84"
            + b"".join(
                msgpack.packb(x) for x in ("version", 1, "id", "req-1", "model", "echo", "inputs")
            )
            + header
        )
    value = value.ljust(1024, b"\x00")  # a 1 KB record
    assert peak_bytes(value, MSGPACK) < MEMORY_LIMIT
    outcome = admit(value, MSGPACK)
    assert isinstance(outcome, Rejection)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1024, max_size=1024), st.sampled_from([MSGPACK, JSON]))
def test_a_1kb_record_costs_a_few_mb_at_most(value: bytes, headers: Any) -> None:
    assert peak_bytes(value, headers) < MEMORY_LIMIT


@pytest.mark.parametrize(
    "json_value",
    [
        '{"version":1,"id":"req-1","model":"echo","inputs":' + "[" * 500 + "]" * 500 + "}",
        '{"version":1,"id":"req-1","model":"echo","inputs":{"$tensor":{"dtype":"float32",'
        '"shape":[4294967296,4294967296],"data":"AAAAAA=="}}}',
        '{"version":1,"id":"req-1","model":"echo","inputs":"' + "A" * 900 + '"}',
    ],
)
def test_crafted_json_costs_a_few_mb_at_most(json_value: str) -> None:
    assert peak_bytes(json_value.encode().ljust(1024), JSON) < MEMORY_LIMIT


# --- NaN and infinity -------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("where", ["deadline_ms", "submitted_ms", "version"])
def test_non_finite_numbers_in_integer_fields_are_rejected(literal: str, where: str) -> None:
    fields = {"version": "1", "id": '"req-1"', "model": '"echo"', "inputs": "1", where: literal}
    value = "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"
    outcome = admit(value.encode(), JSON)
    assert isinstance(outcome, Rejection)
    packed = {"version": 1, "id": "req-1", "model": "echo", "inputs": 1, where: float(literal)}
    assert isinstance(admit(pack_msgpack(packed), MSGPACK), Rejection)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_are_admitted_and_answered(number: float) -> None:
    value = pack_msgpack({"version": 1, "id": "req-1", "model": "echo", "inputs": [number]})
    outcome = admit(value, MSGPACK)
    assert isinstance(outcome, PendingRequest)
    answer(outcome)


def test_a_vector_tensor_full_of_nan_is_admitted() -> None:
    data = struct.pack("<4f", math.nan, math.inf, -math.inf, 0.0)
    value = msgpack.packb(
        {"version": 1, "id": "req-1", "model": "vector", "inputs": raw_tensor("float32", [4], data)}
    )
    assert isinstance(admit(value, MSGPACK), PendingRequest)


# --- out-of-range integers (JSON integers have no size limit) ---------------------------


@pytest.mark.parametrize("sign", ["", "-"])
def test_a_deadline_beyond_float_range_is_rejected(sign: str) -> None:
    value = (
        '{"version":1,"id":"req-1","model":"echo","inputs":1,"deadline_ms":'
        + sign
        + "1"
        + "0" * 400
        + "}"
    )
    outcome = admit(value.encode(), JSON)
    assert isinstance(outcome, Rejection) and outcome.error.code == "invalid_request"


def test_a_submitted_ms_beyond_float_range_is_rejected_or_answered() -> None:
    value = '{"version":1,"id":"req-1","model":"echo","inputs":1,"submitted_ms":-1' + "0" * 400
    answer(admit((value + "}").encode(), JSON))


# --- pickles ----------------------------------------------------------------------------

UNPICKLED: list[str] = []


def _unpickled() -> str:
    UNPICKLED.append("a pickle was loaded")
    return "trap"


class Trap:
    """Whoever unpickles this calls _unpickled(): the test would see it."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_unpickled, ())


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("encoding", [MSGPACK, JSON])
def test_pickle_payloads_are_never_loaded(protocol: int, encoding: Any) -> None:
    payload = pickle.dumps(
        {"version": 1, "id": "req-1", "model": "echo", "inputs": Trap()}, protocol=protocol
    )
    assert isinstance(admit(payload, encoding), Rejection)  # not msgpack, not JSON
    inside = msgpack.packb(
        {"version": 1, "id": "req-1", "model": "echo", "inputs": payload}, use_bin_type=True
    )
    outcome = admit(inside, MSGPACK)  # a pickle as bytes is just bytes: echoed, never loaded
    assert isinstance(outcome, PendingRequest) and outcome.item == payload
    answer(outcome)
    tensor = raw_tensor("uint8", [len(payload)], payload)
    as_tensor = msgpack.packb({"version": 1, "id": "req-1", "model": "vector", "inputs": tensor})
    assert isinstance(admit(as_tensor, MSGPACK), Rejection)
    assert not UNPICKLED


def test_an_encoding_from_headers_alone_is_never_pickle() -> None:
    assert isinstance(admit(b"x", [("content-type", b"application/python-pickle")]), Rejection)
    assert {encoding.value for encoding in Encoding} == {"application/msgpack", "application/json"}
