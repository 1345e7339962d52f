"""``hf-causal:DIR``: a Hugging Face causal-LM directory served by the step engine. The
directory is written here: a tiny, randomly initialised Llama (2 layers, hidden size 64)
with SmolLM2's tokenizer, saved with ``save_pretrained`` (what a user's fine-tune looks
like on disk), loaded through the loaders table offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inferpool.errors import ConfigurationError
from worker.models.config import ModelConfig
from worker.models.generative import smollm2
from worker.models.generative.hf_causal import load_hf_causal
from worker.models.generative.llama_gguf import load_llama_gguf
from worker.models.generative.model import GenerativeModel
from worker.models.registry import load_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = load_llama_gguf(smollm2.gguf_path())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_saved_causal_lm_directory_is_served_and_matches_generate(model_dir: Path) -> None:
    config = ModelConfig(name="tiny", loader=f"hf-causal:{model_dir}", quantization="none",
                         options={"max_running": 2, "max_new_tokens": 16})
    model = load_model(config)
    assert isinstance(model, GenerativeModel) and model.version == model_dir.name
    prompt = model.chat_ids("Say something")
    expected = model.reference_greedy(prompt, 12)
    from worker.models.generative.greedy import greedy_continuations

    ours = greedy_continuations(model.hf_model, [prompt], 12, model.end_ids, model.pad_id)[0]
    assert ours[: len(expected)] == expected and expected, "the step path is generate()'s"


def test_a_directory_without_a_model_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="cannot load a causal LM"):
        load_hf_causal(tmp_path)
