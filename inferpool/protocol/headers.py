"""Kafka header names of the protocol, and how a header is read from a record.

Header names are matched case-insensitively (docs/protocol.md, section 2.2)."""

from __future__ import annotations

import re
from collections.abc import Iterable

CONTENT_TYPE_HEADER = "content-type"
TRACEPARENT_HEADER = "traceparent"
#: A W3C trace context ``traceparent``: version-traceid-parentid-flags.
TRACEPARENT_PATTERN = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[ -~]*)?")
#: How much of a traceparent header is copied into the result's ``trace``.
MAX_TRACE_CHARS = 128

# Added to a record's own headers on its dead-letter copy (docs/protocol.md, section 7).
ERROR_CODE_HEADER = "inferpool-error-code"
ERROR_MESSAGE_HEADER = "inferpool-error-message"
SOURCE_TOPIC_HEADER = "inferpool-source-topic"
SOURCE_PARTITION_HEADER = "inferpool-source-partition"
SOURCE_OFFSET_HEADER = "inferpool-source-offset"
#: On a copy whose value was cut to fit the dead-letter topic: "true", and the value's size.
TRUNCATED_HEADER = "inferpool-truncated"
ORIGINAL_SIZE_HEADER = "inferpool-original-size"
#: On the copy of a record that had neither key nor value (Kafka needs one): "true".
NULL_VALUE_HEADER = "inferpool-null-value"


def header(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    """The value of the first header called ``name`` (lower case) that has one, or None: a
    header with a null value counts as absent."""
    for key, value in headers or ():
        if value is not None and key.lower() == name:
            return bytes(value)
    return None
