"""Intake alone: records become pending requests or rejections, never exceptions."""

from __future__ import annotations

from typing import Any

import testing_models
from hypothesis import given
from hypothesis import strategies as st
from kafka_stubs import Record

from inferpool.errors import RequestError
from inferpool.protocol.wire import pack_msgpack
from worker.admission.intake import Intake
from worker.models.echo import EchoModel
from worker.models.registry import ModelRegistry, load_model
from worker.offsets import OffsetToken, TopicPartition
from worker.request import PendingRequest, Rejection

TOKEN = OffsetToken(TopicPartition("requests", 0), 1, 0)
INTAKE = Intake(ModelRegistry([EchoModel(), testing_models.VectorModel()]), max_request_bytes=512)


def admit(record: Record) -> PendingRequest | Rejection:
    return INTAKE.admit(record, TOKEN, now_monotonic=100.0, now_ms=1_000_000)


def test_a_good_request_is_admitted_with_its_deadline_on_the_monotonic_clock() -> None:
    value = pack_msgpack({"version": 1, "id": "req-1", "model": "echo", "inputs": [1, 2],
                          "deadline_ms": 1_000_250, "submitted_ms": 999_990})
    request = admit(Record(value, headers=[("traceparent", b"00-abc-def-01")]))
    assert isinstance(request, PendingRequest)
    assert request.item == [1, 2] and request.traceparent == "00-abc-def-01"
    assert request.deadline_monotonic == 100.25
    assert not request.expired(100.2) and request.expired(100.25)


def test_an_undecodable_value_is_rejected_with_the_id_from_the_key() -> None:
    rejection = admit(Record(b"\xc1"))
    assert isinstance(rejection, Rejection)
    assert rejection.request_id == "req-1" and rejection.error.code == "malformed_request"


def test_a_key_that_is_not_an_id_gives_no_id() -> None:
    rejection = admit(Record(b"\xc1", key=b"has spaces{}"))
    assert isinstance(rejection, Rejection) and rejection.request_id is None


def test_size_is_checked_before_decoding() -> None:
    rejection = admit(Record(b"\xc1" * 513))
    assert isinstance(rejection, Rejection) and rejection.error.code == "payload_too_large"


def test_a_model_that_raises_anything_in_validate_rejects_just_that_request() -> None:
    class Picky(EchoModel):
        name = "picky"

        def validate(self, inputs: Any, params: Any) -> Any:
            raise KeyError("no")

    intake = Intake(ModelRegistry([Picky()]), 512)
    value = pack_msgpack({"version": 1, "id": "r", "model": "picky", "inputs": 1})
    rejection = intake.admit(Record(value, key=b"r"), TOKEN, 0.0, 0)
    assert isinstance(rejection, Rejection) and rejection.error.code == "invalid_input"


def test_a_user_model_loads_from_its_import_path() -> None:
    model = load_model("doubler=testing_models:vector")
    assert model.name == "doubler" and model.version == "1"


@given(st.binary(max_size=600), st.sampled_from([b"application/msgpack", b"application/json",
                                                 b"text/plain"]))
def test_no_bytes_make_intake_raise(value: bytes, content_type: bytes) -> None:
    outcome = admit(Record(value, headers=[("content-type", content_type)]))
    if isinstance(outcome, Rejection):
        assert isinstance(outcome.error, RequestError)


def test_a_record_that_breaks_intake_unexpectedly_is_rejected_not_raised() -> None:
    rejection = admit(Record(b"\x80", headers=12345))  # headers that cannot be iterated
    assert isinstance(rejection, Rejection)
    assert rejection.request_id == "req-1" and rejection.error.code == "malformed_request"


# --- records no well-behaved producer sends (docs/protocol.md, section 2.5) --------------

GOOD = {"version": 1, "id": "req-1", "model": "echo", "inputs": 1}


def test_a_tombstone_is_malformed_under_its_key() -> None:
    rejection = admit(Record(None))
    assert isinstance(rejection, Rejection) and rejection.request_id == "req-1"
    assert rejection.error.code == "malformed_request" and "tombstone" in str(rejection.error)


def test_an_empty_value_is_malformed_under_its_key() -> None:
    rejection = admit(Record(b""))
    assert isinstance(rejection, Rejection) and rejection.error.code == "malformed_request"
    assert "empty" in str(rejection.error) and rejection.request_id == "req-1"


def test_a_key_that_is_not_the_id_is_refused_under_the_key_never_the_id() -> None:
    forged = pack_msgpack({**GOOD, "id": "victim-id"})
    rejection = admit(Record(forged, key=b"bad-mismatch"))
    assert isinstance(rejection, Rejection) and rejection.error.code == "invalid_request"
    assert rejection.request_id == "bad-mismatch"
    assert "victim-id" in str(rejection.error) and "record key" in str(rejection.error)


def test_a_null_key_is_refused_with_no_id_to_answer_under() -> None:
    rejection = admit(Record(pack_msgpack(GOOD), key=None))
    assert isinstance(rejection, Rejection) and rejection.error.code == "invalid_request"
    assert rejection.request_id is None


def test_a_rejection_never_uses_the_id_in_the_value() -> None:
    unknown_model = pack_msgpack({**GOOD, "id": "victim-id", "model": "nope"})
    rejection = admit(Record(unknown_model, key=b"attacker"))
    assert isinstance(rejection, Rejection) and rejection.request_id == "attacker"


def test_headers_with_null_values_count_as_absent() -> None:
    request = admit(Record(pack_msgpack(GOOD), headers=[("content-type", None),
                                                        ("traceparent", None), ("x", None)]))
    assert isinstance(request, PendingRequest) and request.traceparent is None


def test_a_marker_for_an_unreadable_batch_is_rejected_with_its_offsets() -> None:
    from worker.kafka_batches import FIRST_OFFSET_HEADER, UNREADABLE_HEADER

    marker = Record(None, key=None, offset=41,
                    headers=[(UNREADABLE_HEADER, b"bad CRC"), (FIRST_OFFSET_HEADER, b"7")])
    rejection = admit(marker)
    assert isinstance(rejection, Rejection) and rejection.error.code == "unreadable_batch"
    assert rejection.request_id is None and "7-41" in str(rejection.error)


def test_a_forged_marker_is_just_a_tombstone() -> None:
    forged = Record(None, key=None, headers=[("x-inferpool-unreadable-0000", b"x")])
    rejection = admit(forged)
    assert isinstance(rejection, Rejection) and rejection.error.code == "malformed_request"
