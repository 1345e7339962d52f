"""``hf-causal:DIR``: any local Hugging Face causal-LM directory (``config.json``, weights,
tokenizer files), loaded offline. Its architecture must write its attention keys and values
through the cache's ``update`` and honour a 4-D attention mask (Llama, Mistral, Qwen2,
Phi-3, Gemma do); the load checks that the step engine's greedy tokens equal
``generate()``'s on a short prompt, and refuses the model otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from inferpool.errors import ConfigurationError

CHECK_TOKENS = 8


def load_hf_causal(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32
        ).eval()  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot load a causal LM from {path}: {error}") from None
    _check_step_path(path, model, tokenizer)
    return model, tokenizer


def _check_step_path(path: Path, model: Any, tokenizer: Any) -> None:
    from worker.models.generative.greedy import greedy_continuations

    ids = [int(i) for i in tokenizer("The quick brown fox")["input_ids"]]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        expected = model.generate(
            input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False, max_new_tokens=CHECK_TOKENS, min_new_tokens=CHECK_TOKENS,
            pad_token_id=pad,
        )[0, len(ids) :].tolist()
        try:
            ours = greedy_continuations(model, [ids], CHECK_TOKENS, frozenset(), pad)[0]
        except Exception as error:
            raise ConfigurationError(
                f"{path}: this architecture ({type(model).__name__}) does not run with the "
                f"step engine's KV cache: {type(error).__name__}: {error}"
            ) from None
    if ours != expected:
        raise ConfigurationError(
            f"{path}: greedy tokens through the step engine's KV cache {ours} differ from "
            f"generate()'s {expected}; {type(model).__name__} is not supported"
        )
