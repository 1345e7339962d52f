"""Generative requests on the wire: what ``inputs`` and ``params`` hold, what ``outputs``
hold, and the entries of a request's token stream (docs/protocol.md, section 10).

A stream entry is a Redis stream entry: a flat map of field names to string values, so a
client in any language reads it with a plain ``XREAD``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inferpool.errors import MalformedRequest


class FinishReason(enum.StrEnum):
    STOP = "stop"  # the model ended its answer, or a stop string was produced
    LENGTH = "length"  # max_new_tokens (or the model's context) was reached
    DEADLINE = "deadline"  # the request's deadline passed while it ran
    CANCELLED = "cancelled"  # a client asked to cancel it (the :cancel key)


class EntryType(enum.StrEnum):
    TOKENS = "tokens"  # text produced since the previous entry
    RESTART = "restart"  # a new run of the request began: discard the text read so far
    END = "end"  # the run ended; the result is stored (read :result)


# --- params a generative model reads (all optional) --------------------------------------
PARAM_MAX_NEW_TOKENS = "max_new_tokens"
PARAM_TEMPERATURE = "temperature"  # 0 (the default): greedy
PARAM_TOP_P = "top_p"
PARAM_TOP_K = "top_k"
PARAM_STOP = "stop"  # a string or a list of strings
PARAM_SEED = "seed"
PARAM_STREAM = "stream"  # default true
PARAM_RAW = "raw"  # true: a string prompt is continued as is, without the chat template


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    """``outputs`` of an ``ok`` result of a generative model."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float | None  # from the run's start (None: no token produced)
    tokens_per_s: float  # completion tokens over the time from the first token to the last

    def to_wire(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason.value,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "time_to_first_token_ms": self.time_to_first_token_ms,
            "tokens_per_s": self.tokens_per_s,
        }

    @classmethod
    def from_wire(cls, fields: Mapping[str, Any]) -> GenerationOutput:
        return cls(
            text=str(fields["text"]),
            finish_reason=FinishReason(fields["finish_reason"]),
            prompt_tokens=int(fields["prompt_tokens"]),
            completion_tokens=int(fields["completion_tokens"]),
            time_to_first_token_ms=fields.get("time_to_first_token_ms"),
            tokens_per_s=float(fields.get("tokens_per_s") or 0.0),
        )


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry of a request's token stream.

    ``seq`` numbers the ``tokens`` entries of one run from 0 (a gap means entries were
    missed); ``text`` is the stable text of the entry's tokens (never half a character);
    on ``end``, ``tokens`` and ``seq`` count the run's tokens and ``tokens`` entries.
    """

    type: EntryType
    seq: int = 0
    text: str = ""
    tokens: int = 0
    finish_reason: FinishReason | None = None
    worker: str | None = None

    def to_fields(self) -> dict[str, str]:
        fields = {"type": self.type.value, "seq": str(self.seq)}
        if self.type is EntryType.TOKENS:
            fields |= {"text": self.text, "tokens": str(self.tokens)}
        elif self.type is EntryType.END:
            fields["tokens"] = str(self.tokens)
            if self.finish_reason is not None:
                fields["finish_reason"] = self.finish_reason.value
        if self.worker is not None:
            fields["worker"] = self.worker
        return fields

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> StreamEntry:
        fields = {_text(key): _text(value) for key, value in raw.items()}
        try:
            reason = fields.get("finish_reason")
            return cls(
                type=EntryType(fields["type"]),
                seq=int(fields.get("seq", "0")),
                text=fields.get("text", ""),
                tokens=int(fields.get("tokens", "0")),
                finish_reason=FinishReason(reason) if reason else None,
                worker=fields.get("worker"),
            )
        except (KeyError, ValueError) as error:
            raise MalformedRequest(f"not a stream entry: {error}") from None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)
