"""GenerativeOptions: how one generative model is served (its loader's ``options`` table).

    [[models]]
    name = "smollm2"
    loader = "smollm2"                  # or hf-causal:/models/my-llm
    quantization = "auto"               # auto | none | int8 (CPU) | fp16 | bf16 (CUDA)
    options = { max_running = 16, max_new_tokens = 256 }
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.models.precision import Precision


@dataclass(frozen=True, slots=True)
class GuardFloor:
    """The accuracy guard's floor: a reduced precision is served only if its next-token
    choice agrees with fp32's greedy continuation this often (teacher-forced, over the
    fixed prompt set), and its own greedy continuations match fp32's token for token for
    at least this share of the tokens before their first difference."""

    top1_agreement: float = 0.95
    greedy_prefix: float = 0.5


@dataclass(frozen=True, slots=True)
class GenerativeOptions:
    precision: Precision = Precision.AUTO
    device: str = "auto"
    # requests: caps on what a request may ask for
    max_new_tokens: int = 256  # a request's max_new_tokens is capped to this
    default_max_new_tokens: int = 128
    max_prompt_tokens: int = 1024  # longer prompts are refused (invalid_input)
    max_input_bytes: int = 65_536
    max_stop_strings: int = 4
    # the step engine's budget
    max_running: int = 16  # sequences decoding together (the KV cache's rows)
    kv_cache_mb: int = 2048  # ceiling of the KV cache; fewer rows fit long contexts
    prefill_tokens_per_step: int = 256  # prompt tokens prefilled between two decode steps
    # streaming: an entry every stream_tokens tokens, or stream_interval_ms
    stream_tokens: int = 4
    stream_interval_ms: float = 20.0
    floor: GuardFloor = field(default_factory=GuardFloor)
    guard_new_tokens: int = 16  # greedy tokens per guard prompt

    def __post_init__(self) -> None:
        positive = {
            "max_new_tokens": self.max_new_tokens,
            "default_max_new_tokens": self.default_max_new_tokens,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_input_bytes": self.max_input_bytes,
            "max_running": self.max_running,
            "kv_cache_mb": self.kv_cache_mb,
            "prefill_tokens_per_step": self.prefill_tokens_per_step,
            "stream_tokens": self.stream_tokens,
            "guard_new_tokens": self.guard_new_tokens,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.stream_interval_ms < 0:
            raise ValueError("stream_interval_ms must be >= 0")

    @property
    def max_context(self) -> int:
        """Positions one sequence may use: its prompt and what it generates."""
        return self.max_prompt_tokens + self.max_new_tokens
