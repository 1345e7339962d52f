"""Priority lanes: a request's ``priority`` and the Kafka topic of each lane.

Kafka has no per-message priority, so each priority is a lane with its own topic: the
``normal`` lane is the model's request topic itself (what producers that know nothing of
lanes publish to), ``high`` and ``low`` are that topic with ``.high`` / ``.low`` appended.
A worker reads every lane of its models; see docs/protocol.md, "Priority lanes".
"""

from __future__ import annotations

import enum
import functools

from inferpool.errors import ConfigurationError, InvalidRequest


class Priority(enum.StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for high, 1 for normal, 2 for low: how many lanes are served before it."""
        return _RANKS[self]

    @classmethod
    def parse(cls, value: object) -> Priority:
        """The priority a request field names (absent: normal); InvalidRequest otherwise."""
        if value is None:
            return cls.NORMAL
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        raise InvalidRequest(
            f"priority must be one of {', '.join(p.value for p in cls)} (or absent: normal), "
            f"got {str(value)[:40]!r}"
        )


_RANKS = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}


def lane_topic(topic: str, priority: Priority) -> str:
    """The topic of ``priority``'s lane of request topic ``topic``."""
    return topic if priority is Priority.NORMAL else f"{topic}.{priority.value}"


def lane_topics(topic: str) -> list[str]:
    """Every lane's topic of request topic ``topic``, high first. ConfigurationError when
    ``topic`` itself ends like a lane (a model named ``x.high``, say): its normal lane would
    be read as the high lane of another topic, and its requests served out of order."""
    lane = lane_of_topic(topic)
    if lane is not Priority.NORMAL:
        raise ConfigurationError(
            f"request topic {topic!r} ends in '.{lane.value}', which names the {lane.value} "
            "lane of another topic: rename the model or change INFERPOOL_REQUEST_TOPIC"
        )
    return [lane_topic(topic, priority) for priority in Priority]


@functools.lru_cache(maxsize=4096)
def lane_of_topic(topic: str) -> Priority:
    """The lane a topic is, by its suffix (a topic without one is a normal lane). Cached:
    the worker asks for every request it answers, of a handful of topics."""
    for priority in (Priority.HIGH, Priority.LOW):
        if topic.endswith(f".{priority.value}"):
            return priority
    return Priority.NORMAL
