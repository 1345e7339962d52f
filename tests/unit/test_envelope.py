"""RequestEnvelope: round trips, and the RequestError subclass each kind of bad record gets."""

from __future__ import annotations

import json
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpool.errors import (
    InvalidInput,
    InvalidRequest,
    MalformedRequest,
    RequestError,
    UnsupportedVersion,
)
from inferpool.protocol import (
    FORMAT_VERSION,
    REQUEST_ID_PATTERN,
    RequestEnvelope,
    new_request_id,
)
from inferpool.protocol.wire import Encoding, WireTensor, pack

ENCODINGS = list(Encoding)
ENCODING_IDS = [encoding.name for encoding in ENCODINGS]

VALID: dict[str, Any] = {
    "version": 1,
    "id": "req-1",
    "model": "echo",
    "inputs": [1, 2],
    "submitted_ms": 1_700_000_000_000,
}


_MISSING = object()


def _raw(fields: dict[str, Any], encoding: Encoding) -> bytes:
    return pack(fields, encoding)


def _with(**changes: Any) -> dict[str, Any]:
    fields = {**VALID, **changes}
    return {key: value for key, value in fields.items() if value is not _MISSING}


@pytest.mark.parametrize("encoding", ENCODINGS, ids=ENCODING_IDS)
def test_round_trip(encoding: Encoding) -> None:
    envelope = RequestEnvelope(
        id="a.b:c-d_1",
        model="resnet-50.v2",
        inputs={"image": WireTensor("float32", (1, 2), struct.pack("<2f", 0.5, -1.0)), "k": 3},
        params={"top_k": 5, "labels": ["a", "b"]},
        deadline_ms=1_700_000_001_000,
        submitted_ms=1_700_000_000_000,
    )
    assert RequestEnvelope.decode(envelope.encode(encoding), encoding) == envelope


def test_to_wire_leaves_out_empty_params_and_no_deadline() -> None:
    envelope = RequestEnvelope(id="x", model="echo", inputs=None, submitted_ms=5)
    assert envelope.to_wire() == {
        "version": FORMAT_VERSION, "id": "x", "model": "echo", "inputs": None, "submitted_ms": 5
    }


@pytest.mark.parametrize("encoding", ENCODINGS, ids=ENCODING_IDS)
def test_headers_declare_the_content_type(encoding: Encoding) -> None:
    envelope = RequestEnvelope(id="x", model="echo", inputs=1)
    assert envelope.headers(encoding) == [("content-type", encoding.value.encode())]


@pytest.mark.parametrize("encoding", ENCODINGS, ids=ENCODING_IDS)
def test_unknown_fields_are_ignored_and_optional_fields_default(encoding: Encoding) -> None:
    fields = _with(submitted_ms=_MISSING, future_field={"x": 1}, params=None, deadline_ms=None)
    envelope = RequestEnvelope.decode(_raw(fields, encoding), encoding)
    assert (envelope.params, envelope.deadline_ms, envelope.submitted_ms) == ({}, None, 0)


def test_new_request_ids_are_unique_and_valid() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(REQUEST_ID_PATTERN.fullmatch(request_id) for request_id in ids)


# --- each kind of bad record, in both encodings ----------------------------------------


BAD_FIELDS: list[tuple[str, dict[str, Any], type[RequestError], str]] = [
    ("no version", _with(version=_MISSING), UnsupportedVersion, "version None"),
    ("version 2", _with(version=2), UnsupportedVersion, "version 2 is not supported"),
    ("version as text", _with(version="1"), UnsupportedVersion, "version '1'"),
    ("no id", _with(id=_MISSING), InvalidRequest, "request id must be"),
    ("empty id", _with(id=""), InvalidRequest, "request id must be"),
    ("id too long", _with(id="a" * 129), InvalidRequest, "request id must be"),
    ("id with a space", _with(id="a b"), InvalidRequest, "request id must be"),
    ("id with braces", _with(id="{a}"), InvalidRequest, "request id must be"),
    ("id not text", _with(id=12), InvalidRequest, "request id must be"),
    ("no model", _with(model=_MISSING), InvalidRequest, "model must be"),
    ("model with a colon", _with(model="a:b"), InvalidRequest, "model must be"),
    ("model too long", _with(model="m" * 65), InvalidRequest, "model must be"),
    ("no inputs", _with(inputs=_MISSING), InvalidRequest, "no 'inputs'"),
    ("params a list", _with(params=[1]), InvalidRequest, "params must be a map"),
    ("deadline as text", _with(deadline_ms="soon"), InvalidRequest, "deadline_ms must be"),
    ("deadline a float", _with(deadline_ms=1.5), InvalidRequest, "deadline_ms must be"),
    ("deadline a bool", _with(deadline_ms=True), InvalidRequest, "deadline_ms must be"),
    ("submitted as text", _with(submitted_ms="x"), InvalidRequest, "submitted_ms must be"),
]


@pytest.mark.parametrize("encoding", ENCODINGS, ids=ENCODING_IDS)
@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [case[1:] for case in BAD_FIELDS],
    ids=[case[0] for case in BAD_FIELDS],
)
def test_bad_field_is_the_right_request_error(
    fields: dict[str, Any], error: type[RequestError], message: str, encoding: Encoding
) -> None:
    with pytest.raises(error, match=message):
        RequestEnvelope.decode(_raw(fields, encoding), encoding)


MALFORMED: list[tuple[str, bytes, Encoding]] = [
    ("empty msgpack", b"", Encoding.MSGPACK),
    ("invalid msgpack byte", b"\xc1\x00", Encoding.MSGPACK),
    ("truncated msgpack", msgpack.packb(VALID)[:-3], Encoding.MSGPACK),
    ("msgpack array", msgpack.packb([VALID]), Encoding.MSGPACK),
    ("msgpack string", msgpack.packb("hello"), Encoding.MSGPACK),
    ("json sent as msgpack", json.dumps(VALID).encode(), Encoding.MSGPACK),
    ("empty json", b"", Encoding.JSON),
    ("truncated json", json.dumps(VALID).encode()[:-2], Encoding.JSON),
    ("json array", json.dumps([VALID]).encode(), Encoding.JSON),
    ("json number", b"42", Encoding.JSON),
    ("msgpack sent as json", msgpack.packb(VALID), Encoding.JSON),
]


@pytest.mark.parametrize(
    ("data", "encoding"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_undecodable_value_is_malformed_request(data: bytes, encoding: Encoding) -> None:
    with pytest.raises(MalformedRequest):
        RequestEnvelope.decode(data, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS, ids=ENCODING_IDS)
def test_bad_tensor_in_inputs_is_invalid_input(encoding: Encoding) -> None:
    if encoding is Encoding.MSGPACK:
        bad = msgpack.ExtType(1, msgpack.packb(["float32", [3]]) + b"\x00" * 4)
        data = msgpack.packb(_with(inputs={"x": bad}))
    else:
        bad_json = {"$tensor": {"dtype": "float32", "shape": [3], "data": "AAAAAA=="}}
        data = json.dumps(_with(inputs={"x": bad_json})).encode()
    with pytest.raises(InvalidInput, match="needs 12 bytes, got 4"):
        RequestEnvelope.decode(data, encoding)


@pytest.mark.parametrize("encoding", ENCODINGS, ids=ENCODING_IDS)
def test_unhashable_version_is_unsupported_version(encoding: Encoding) -> None:
    with pytest.raises(UnsupportedVersion):
        RequestEnvelope.decode(_raw(_with(version=[1]), encoding), encoding)


@pytest.mark.parametrize("version", [True, 1.0])
def test_version_must_be_the_integer_1(version: object) -> None:
    with pytest.raises(UnsupportedVersion):
        RequestEnvelope.decode(_raw(_with(version=version), Encoding.MSGPACK))


# --- properties -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512), encoding=st.sampled_from(ENCODINGS))
def test_arbitrary_bytes_decode_or_raise_a_request_error(data: bytes, encoding: Encoding) -> None:
    try:
        envelope = RequestEnvelope.decode(data, encoding)
    except RequestError:
        return
    assert isinstance(envelope, RequestEnvelope)


@settings(deadline=None)
@given(cut=st.integers(min_value=0), encoding=st.sampled_from(ENCODINGS))
def test_truncated_request_raises_a_request_error(cut: int, encoding: Encoding) -> None:
    data = _raw(_with(inputs={"x": WireTensor("uint8", (3,), b"abc")}), encoding)
    with pytest.raises(RequestError):
        RequestEnvelope.decode(data[: cut % len(data)], encoding)


_text_keys = st.text(max_size=8).filter(lambda key: key != "$tensor")
_wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_text_keys, children, max_size=4),
    max_leaves=20,
)


@settings(deadline=None)
@given(inputs=_wire_values, params=st.dictionaries(_text_keys, _wire_values, max_size=3),
       encoding=st.sampled_from(ENCODINGS))
def test_any_plain_value_round_trips(
    inputs: Any, params: dict[str, Any], encoding: Encoding
) -> None:
    envelope = RequestEnvelope(id="p", model="echo", inputs=inputs, params=params,
                               submitted_ms=1)
    assert RequestEnvelope.decode(envelope.encode(encoding), encoding) == envelope
