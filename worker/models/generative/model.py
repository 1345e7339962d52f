"""GenerativeModel: a causal language model served token by token by the step engine.

It offers what the engine needs and nothing of the engine itself: request checking
(``validate``, ``prepare``: the chat template and tokenization, ``cost``), a KV cache of
rows (``new_cache``), one forward over some of its rows (``forward``), the stable text of
a sequence (``assembler``) and its end tokens. The one-shot ``Model`` hooks exist so the
registry accepts it; its ``forward`` of a batch is never called.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from inferpool.errors import InvalidInput
from inferpool.logs import get_logger
from worker.models.base import ListModel
from worker.models.calibration import CALIBRATION_SEED, sentences
from worker.models.device import pick_device
from worker.models.generative.guard import GUARD_PROMPTS, GenerativeChoice, choose_precision
from worker.models.generative.options import GenerativeOptions
from worker.models.generative.precisions import build_candidate, ladder
from worker.models.generative.request import GenerationRequest, parse_request
from worker.models.generative.slot_cache import SlotCache, run_forward
from worker.models.generative.text import TextAssembler

log = get_logger("worker.models.generative")

CALIBRATION_PROMPTS = 16
#: Positions a prefill chunk's padding may write past a row's context.
PADDING_ROOM = 1


class GenerativeModel(ListModel):
    generative = True  # what Worker._assemble looks for: served by a StepEngine

    def __init__(
        self,
        name: str,
        version: str,
        load: Callable[[], tuple[Any, Any]],
        options: GenerativeOptions | None = None,
    ) -> None:
        options = options or GenerativeOptions()
        self.name, self.version, self.options = name, version, options
        self.device = pick_device(options.device)
        started = time.perf_counter()
        fp32_model, self.tokenizer = load()
        self.end_ids = _end_ids(fp32_model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(self.end_ids))
        calibration = [self.chat_ids(s) for s in sentences(CALIBRATION_PROMPTS, CALIBRATION_SEED)]
        self.choice, candidate = choose_precision(
            ladder(options.precision, self.device),
            lambda mode: build_candidate(fp32_model, mode, self.device, calibration),
            [self.chat_ids(prompt) for prompt in GUARD_PROMPTS],
            self.end_ids,
            self.pad_id,
            options.floor,
            options.guard_new_tokens,
        )
        self.hf_model, self.dtype = candidate.model, candidate.dtype
        self.load_seconds = time.perf_counter() - started
        _log_choice(name, version, self.choice, self.device, self.load_seconds)

    # --- the request -----------------------------------------------------------------

    def chat_ids(self, text: str) -> list[int]:
        return self._template([("user", text)])

    def _template(self, messages: Sequence[tuple[str, str]]) -> list[int]:
        chat = [{"role": role, "content": content} for role, content in messages]
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            return [int(i) for i in ids]
        text = "\n".join(content for _, content in messages)  # no template: plain text
        return [int(i) for i in self.tokenizer(text)["input_ids"]]

    def validate(self, inputs: Any, params: Mapping[str, Any]) -> GenerationRequest:
        return parse_request(inputs, params, self.options)

    def prepare(self, items: Sequence[Any]) -> list[Any]:
        return [self._tokenized(item) for item in items]

    def _tokenized(self, item: GenerationRequest) -> GenerationRequest | InvalidInput:
        if item.messages is not None:
            ids = self._template(item.messages)
        else:
            ids = [int(i) for i in self.tokenizer(item.prompt or "")["input_ids"]]
        if not ids:
            return InvalidInput("the prompt is empty")
        if len(ids) > self.options.max_prompt_tokens:
            return InvalidInput(
                f"the prompt is {len(ids)} tokens; this model takes at most "
                f"{self.options.max_prompt_tokens}"
            )
        return dataclasses.replace(item, prompt_ids=tuple(ids))

    def cost(self, item: Any) -> int:
        return int(item.prompt_tokens) if isinstance(item, GenerationRequest) else 1

    # --- what the step engine runs (in its model thread) -------------------------------

    def cache_rows(self) -> int:
        """How many sequences the KV cache holds: ``max_running``, fewer if the memory
        ceiling ``kv_cache_mb`` cannot hold that many full contexts."""
        probe = SlotCache(self.hf_model.config, 1, 1, self.dtype, "meta")
        per_row = probe.token_bytes() * self.options.max_context
        return max(1, min(self.options.max_running, self.options.kv_cache_mb * 2**20 // per_row))

    def new_cache(self, rows: int) -> SlotCache:
        length = self.options.max_context + self.options.prefill_tokens_per_step + PADDING_ROOM
        return SlotCache(self.hf_model.config, rows, length, self.dtype, self.device)

    def forward_rows(
        self, cache: SlotCache, first_row: int, tokens: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """The next-token logits of rows ``first_row ..`` after feeding them ``tokens``."""
        with torch.inference_mode():
            return run_forward(
                self.hf_model, cache, first_row, tokens.to(self.device),
                positions.to(self.device),
            ).float()

    def assembler(self, request: GenerationRequest) -> TextAssembler:
        return TextAssembler(self.tokenizer, request.stop)

    def warmup(self) -> None:
        cache = self.new_cache(1)
        ids = torch.tensor([self.chat_ids("Hello")])
        positions = torch.arange(ids.shape[1])[None]
        self.forward_rows(cache, 0, ids, positions)

    def reference_greedy(self, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy decoding by transformers' own ``generate()`` (the reference the pool's
        greedy answers are checked against)."""
        ids = torch.tensor([list(prompt_ids)], device=self.device)
        with torch.inference_mode():
            out = self.hf_model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                max_new_tokens=max_new_tokens, eos_token_id=sorted(self.end_ids),
                pad_token_id=self.pad_id,
            )
        return [int(t) for t in out[0, ids.shape[1] :].tolist() if int(t) not in self.end_ids]


def _end_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if not ids:
        raise ValueError("the model names no end-of-sequence token")
    return frozenset(ids)


def _log_choice(
    name: str, version: str, choice: GenerativeChoice, device: torch.device, seconds: float
) -> None:
    for mode, reason in choice.refused:
        log.warning("model.precision_refused", model=name, precision=mode.value, reason=reason)
    figures = choice.figures
    log.info(
        "model.loaded", model=name, version=version, kind="generative",
        precision=choice.precision.value, device=str(device), seconds=round(seconds, 2),
        top1_agreement=figures.top1_agreement if figures else None,
        greedy_prefix=figures.greedy_prefix if figures else None,
    )
