"""The rules for the fields every message carries: request ids, model names, epoch times."""

from __future__ import annotations

import re
import time
import uuid

from inferpool.errors import InvalidRequest

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9._\-]{1,64}")
TENANT_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
MAX_EPOCH_MS = 2**53  # exactly representable as a float, as JSON readers need


def new_request_id() -> str:
    """A fresh, unique request id (32 hex characters)."""
    return uuid.uuid4().hex


def now_ms() -> int:
    """This host's wall clock, in Unix epoch milliseconds."""
    return time.time_ns() // 1_000_000


def check_request_id(request_id: object) -> str:
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise InvalidRequest(
            "request id must be 1-128 characters of letters, digits and . _ : -"
        )
    return request_id


def check_model_name(model: object) -> str:
    if not isinstance(model, str) or not MODEL_NAME_PATTERN.fullmatch(model):
        raise InvalidRequest("model must be 1-64 characters of letters, digits and . _ -")
    return model


def check_tenant(tenant: object) -> str | None:
    """A request's optional tenant: absent (None), or 1-64 letters, digits and . _ : -."""
    if tenant is None:
        return None
    if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
        raise InvalidRequest("tenant must be 1-64 characters of letters, digits and . _ : -")
    return tenant


def id_from_key(key: bytes | None) -> str | None:
    """The request id a Kafka record key holds, or None when the key is not a valid id."""
    if not key:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if REQUEST_ID_PATTERN.fullmatch(text) else None
