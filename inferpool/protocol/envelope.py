"""RequestEnvelope: one inference request, exactly as it travels in a Kafka record.

Record key: the request id (UTF-8). Record value: a msgpack (or JSON) map. Header
``content-type`` says which (absent = msgpack). See docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inferpool.errors import InvalidRequest, MalformedRequest, UnsupportedVersion
from inferpool.protocol.fields import (
    MAX_EPOCH_MS,
    check_model_name,
    check_request_id,
    check_tenant,
)
from inferpool.protocol.headers import CONTENT_TYPE_HEADER
from inferpool.protocol.lanes import Priority
from inferpool.protocol.wire import Encoding, pack, unpack

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})


def _optional_int(fields: Mapping[str, Any], name: str) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{name} must be an integer (epoch milliseconds)")
    if not 0 <= value < MAX_EPOCH_MS:
        raise InvalidRequest(f"{name} must be epoch milliseconds between 0 and 2**53")
    return value


@dataclass(frozen=True, slots=True)
class RequestEnvelope:
    """One request. ``deadline_ms`` and ``submitted_ms`` are Unix epoch milliseconds;
    ``priority`` orders it in its worker's batches (absent on the wire: normal), ``tenant``
    is whose request it is, for fair share and rate limits (absent: no tenant)."""

    id: str
    model: str
    inputs: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    deadline_ms: int | None = None
    submitted_ms: int = 0
    version: int = FORMAT_VERSION
    priority: Priority = Priority.NORMAL
    tenant: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "version": self.version,
            "id": self.id,
            "model": self.model,
            "inputs": self.inputs,
            "submitted_ms": self.submitted_ms,
        }
        if self.params:
            wire["params"] = dict(self.params)
        if self.deadline_ms is not None:
            wire["deadline_ms"] = self.deadline_ms
        if self.priority is not Priority.NORMAL:
            wire["priority"] = self.priority.value
        if self.tenant is not None:
            wire["tenant"] = self.tenant
        return wire

    def encode(self, encoding: Encoding = Encoding.MSGPACK) -> bytes:
        return pack(self.to_wire(), encoding)

    def headers(self, encoding: Encoding = Encoding.MSGPACK) -> list[tuple[str, bytes]]:
        return [(CONTENT_TYPE_HEADER, encoding.content_type)]

    @classmethod
    def decode(cls, data: bytes, encoding: Encoding = Encoding.MSGPACK) -> RequestEnvelope:
        """Decode and validate a record value; raises a RequestError subclass on bad input."""
        fields = unpack(data, encoding)
        if not isinstance(fields, dict):
            raise MalformedRequest("request value must be a map")
        version = fields.get("version")
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            raise UnsupportedVersion(
                f"request format version {version!r} is not supported; use one of "
                f"{sorted(SUPPORTED_VERSIONS)}"
            )
        if "inputs" not in fields:
            raise InvalidRequest("request has no 'inputs'")
        params = fields.get("params") or {}
        if not isinstance(params, dict):
            raise InvalidRequest("params must be a map")
        submitted_ms = _optional_int(fields, "submitted_ms")
        return cls(
            id=check_request_id(fields.get("id")),
            model=check_model_name(fields.get("model")),
            inputs=fields["inputs"],
            params=params,
            deadline_ms=_optional_int(fields, "deadline_ms"),
            submitted_ms=submitted_ms if submitted_ms is not None else 0,
            version=version,
            priority=Priority.parse(fields.get("priority")),
            tenant=check_tenant(fields.get("tenant")),
        )
