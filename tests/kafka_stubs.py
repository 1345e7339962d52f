"""Stand-ins for aiokafka's types in unit tests that need no broker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    """What the worker reads of a consumed Kafka record."""

    value: bytes | None
    key: bytes | None = b"req-1"
    headers: Any = field(default_factory=list)
    topic: str = "requests"
    partition: int = 0
    offset: int = 0
