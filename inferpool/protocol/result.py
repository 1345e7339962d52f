"""ResultRecord: the one answer every request gets, stored in Redis under its request id.

Stored as msgpack, or as JSON when the request came as JSON; a reader tells them apart
by the first byte (``{`` is JSON). See docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass
from typing import Any

from inferpool.errors import InferpoolError, InvalidOutput, MalformedRequest
from inferpool.protocol.wire import Encoding, pack, pack_json, unpack

RESULT_FORMAT_VERSION = 1


class ResultStatus(enum.StrEnum):
    OK = "ok"
    ERROR = "error"
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # a client cancelled it before it started: it never ran
    RATE_LIMITED = "rate_limited"  # its tenant was over its rate limit: it never ran


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A stable machine-readable ``code`` and a message that says what to do."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Timings:
    """Where the time went, in milliseconds.

    queue_wait_ms: submit -> fetched by a worker (wall clocks of two hosts);
    batch_wait_ms: fetched -> its batch started; inference_ms: the batch's model time;
    end_to_end_ms: submit -> result written.
    """

    queue_wait_ms: float = 0.0
    batch_wait_ms: float = 0.0
    inference_ms: float = 0.0
    end_to_end_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ResultRecord:
    id: str
    status: ResultStatus
    outputs: Any = None
    error: ErrorInfo | None = None
    model: str | None = None
    model_version: str | None = None
    worker: str | None = None
    batch_size: int = 0
    timings: Timings = Timings()
    finished_ms: int = 0
    trace: str | None = None
    version: int = RESULT_FORMAT_VERSION

    @property
    def ok(self) -> bool:
        return self.status is ResultStatus.OK

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "id": self.id,
            "status": self.status.value,
            "outputs": self.outputs,
            "error": {"code": self.error.code, "message": self.error.message}
            if self.error
            else None,
            "model": self.model,
            "model_version": self.model_version,
            "worker": self.worker,
            "batch_size": self.batch_size,
            "timings": {  # spelled out: dataclasses.asdict deep-copies, on the hot path
                "queue_wait_ms": self.timings.queue_wait_ms,
                "batch_wait_ms": self.timings.batch_wait_ms,
                "inference_ms": self.timings.inference_ms,
                "end_to_end_ms": self.timings.end_to_end_ms,
            },
            "finished_ms": self.finished_ms,
            "trace": self.trace,
        }

    def encode(self, encoding: Encoding = Encoding.MSGPACK) -> bytes:
        return pack(self.to_wire(), encoding)

    @classmethod
    def decode(cls, data: bytes) -> ResultRecord:
        fields = unpack(data, Encoding.sniff(data))
        if not isinstance(fields, dict):
            raise MalformedRequest("stored result is not a map")
        error = fields.get("error")
        return cls(
            id=fields["id"],
            status=ResultStatus(fields["status"]),
            outputs=fields.get("outputs"),
            error=ErrorInfo(**error) if error else None,
            model=fields.get("model"),
            model_version=fields.get("model_version"),
            worker=fields.get("worker"),
            batch_size=fields.get("batch_size", 0),
            timings=Timings(**(fields.get("timings") or {})),
            finished_ms=fields.get("finished_ms", 0),
            trace=fields.get("trace"),
            version=fields.get("version", RESULT_FORMAT_VERSION),
        )

    def to_json_ready(self) -> dict[str, Any]:
        """A dict that ``json.dumps`` accepts (tensors as {"$tensor": ...}), for printing."""
        return dict(json.loads(pack_json(self.to_wire())))


def decode_result(request_id: str, raw: bytes) -> ResultRecord:
    """The stored result of ``request_id``; a value that is not a result is MalformedRequest."""
    try:
        return ResultRecord.decode(raw)
    except InferpoolError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedRequest(
            f"the stored result of request {request_id!r} is not a valid result record "
            f"({type(error).__name__}: {error})"
        ) from None


def encode_or_explain(record: ResultRecord, encoding: Encoding) -> bytes:
    """The record's bytes; an output that cannot be encoded becomes an error result instead,
    so one bad output never blocks the batch it came in."""
    try:
        return record.encode(encoding)
    except (TypeError, ValueError, OverflowError) as error:
        problem = InvalidOutput(
            f"the model's output cannot be encoded as {encoding.name.lower()}: {error}"
        )
        return dataclasses.replace(
            record,
            status=ResultStatus.ERROR,
            outputs=None,
            error=ErrorInfo(problem.code, str(problem)),
        ).encode(encoding)
