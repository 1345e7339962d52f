"""ResultRecord encoding, the reader's states and the ``result`` subcommand's arguments."""

from __future__ import annotations

import argparse

import msgpack
import pytest

from inferpool.errors import MalformedRequest
from inferpool.protocol import decode_result
from inferpool.protocol.wire import Encoding, WireTensor
from inferpool_app import result_command as cli
from results import ErrorInfo, RequestState, ResultRecord, ResultStatus, Timings

RECORD = ResultRecord(
    id="r1", status=ResultStatus.OK,
    outputs={"y": WireTensor("int16", (2, 1), b"\x01\x00\x02\x00"), "label": "cat"},
    model="echo", model_version="3", worker="w1", batch_size=4,
    timings=Timings(1.0, 2.0, 3.0, 6.0), finished_ms=1_700_000_000_000, trace="t",
)


@pytest.mark.parametrize("encoding", list(Encoding))
def test_record_round_trips(encoding: Encoding) -> None:
    assert ResultRecord.decode(RECORD.encode(encoding)) == RECORD


def test_error_record_round_trips() -> None:
    record = ResultRecord(id="e", status=ResultStatus.ERROR, error=ErrorInfo("model_error", "x"))
    assert ResultRecord.decode(record.encode(Encoding.JSON)) == record
    assert not record.ok


def test_every_result_status_is_a_request_state() -> None:
    assert {RequestState(status.value) for status in ResultStatus} <= set(RequestState)


@pytest.mark.parametrize(
    "raw", [b"\x93\x01\x02\x03", b'{"id": "x"}', b'{"id": "x", "status": "maybe"}', b"\xc1"]
)
def test_a_stored_value_that_is_no_result_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedRequest):
        decode_result("x", raw)


def test_missing_fields_name_the_request() -> None:
    with pytest.raises(MalformedRequest, match="'x'"):
        decode_result("x", msgpack.packb({"id": "x"}))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferpool")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_result_subcommand_arguments() -> None:
    args = _parser().parse_args(["result", "abc", "--wait", "2.5"])
    assert (args.id, args.wait, args.func) == ("abc", 2.5, cli.run)
    assert _parser().parse_args(["result", "abc"]).wait is None


@pytest.mark.parametrize("wait", ["-1", "soon", "nan"])
def test_result_subcommand_rejects_bad_waits(wait: str) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["result", "abc", "--wait", wait])
