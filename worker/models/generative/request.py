"""GenerationRequest: a generative request's inputs and params, checked (``validate``, on the
event loop: cheap) and then tokenized (``prepare``, in the preparation thread).

Inputs: a string (a user message, under the model's chat template; with ``raw: true`` the
string itself is continued) or a list of chat messages ``{"role": ..., "content": ...}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inferpool.errors import InvalidInput
from inferpool.protocol.generation import (
    PARAM_MAX_NEW_TOKENS,
    PARAM_RAW,
    PARAM_SEED,
    PARAM_STOP,
    PARAM_STREAM,
    PARAM_TEMPERATURE,
    PARAM_TOP_K,
    PARAM_TOP_P,
)
from worker.models.generative.options import GenerativeOptions

ROLES = frozenset({"system", "user", "assistant"})
MAX_STOP_CHARS = 64


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    messages: tuple[tuple[str, str], ...] | None  # (role, content); None: a raw prompt
    prompt: str | None
    max_new_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]
    stream: bool
    prompt_ids: tuple[int, ...] = ()  # set by prepare

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


def _number(params: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = params.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"params.{name} must be a number")
    if not low <= value <= high:
        raise InvalidInput(f"params.{name} must be between {low} and {high}, got {value}")
    return float(value)


def _integer(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"params.{name} must be an integer")
    if not low <= value <= high:
        raise InvalidInput(f"params.{name} must be between {low} and {high}, got {value}")
    return value


def _flag(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"params.{name} must be true or false")
    return value


def _stop(params: Mapping[str, Any], options: GenerativeOptions) -> tuple[str, ...]:
    value = params.get(PARAM_STOP)
    if value is None:
        return ()
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, list) or not all(isinstance(s, str) and s for s in strings):
        raise InvalidInput("params.stop must be a non-empty string or a list of them")
    if len(strings) > options.max_stop_strings:
        raise InvalidInput(f"params.stop may hold at most {options.max_stop_strings} strings")
    if any(len(s) > MAX_STOP_CHARS for s in strings):
        raise InvalidInput(f"each stop string may be at most {MAX_STOP_CHARS} characters")
    return tuple(strings)


def _messages(inputs: Any) -> tuple[tuple[str, str], ...]:
    if not inputs:
        raise InvalidInput("inputs: the list of messages is empty")
    messages = []
    for index, message in enumerate(inputs):
        if not isinstance(message, Mapping):
            raise InvalidInput(f"inputs[{index}] must be a map with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise InvalidInput(
                f"inputs[{index}]: role must be one of {sorted(ROLES)} and content a string"
            )
        messages.append((str(role), content))
    return tuple(messages)


def _input_bytes(inputs: Any) -> int:
    if isinstance(inputs, str):
        return len(inputs.encode("utf-8", "replace"))
    return sum(len(str(m.get("content", "")).encode("utf-8", "replace")) for m in inputs)


def parse_request(
    inputs: Any, params: Mapping[str, Any], options: GenerativeOptions
) -> GenerationRequest:
    """The request's inputs and params, checked; raises InvalidInput saying what is wrong."""
    if isinstance(inputs, str):
        raw = _flag(params, PARAM_RAW, False)
        messages: tuple[tuple[str, str], ...] | None = None if raw else (("user", inputs),)
        prompt = inputs if raw else None
    elif isinstance(inputs, list):
        messages, prompt = _messages(inputs), None
    else:
        raise InvalidInput("inputs must be a string (a prompt) or a list of chat messages")
    if _input_bytes(inputs) > options.max_input_bytes:
        raise InvalidInput(f"inputs are over {options.max_input_bytes} bytes of text")
    seed = params.get(PARAM_SEED)
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidInput("params.seed must be an integer between 0 and 2**63 - 1")
    sampling = SamplingParams(
        temperature=_number(params, PARAM_TEMPERATURE, 0.0, 0.0, 5.0),
        top_p=_number(params, PARAM_TOP_P, 1.0, 1e-6, 1.0),
        top_k=_integer(params, PARAM_TOP_K, 0, 0, 1_000_000),
        seed=seed,
    )
    return GenerationRequest(
        messages=messages,
        prompt=prompt,
        max_new_tokens=min(
            _integer(params, PARAM_MAX_NEW_TOKENS, options.default_max_new_tokens, 1, 2**31),
            options.max_new_tokens,
        ),
        sampling=sampling,
        stop=_stop(params, options),
        stream=_flag(params, PARAM_STREAM, True),
    )
