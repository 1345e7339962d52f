"""A Llama-architecture GGUF file as a Hugging Face ``LlamaForCausalLM`` and its tokenizer.

What transformers' GGUF loading does for this architecture, read through ``GgufFile``: the
config from ``llama.*`` metadata, the tensors renamed to Hugging Face's names (the query
and key projections un-permuted: llama.cpp interleaves their rotary halves), and a
byte-level BPE tokenizer from ``tokenizer.ggml.*`` with the control tokens as special
tokens and the file's chat template.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from inferpool.errors import ConfigurationError
from worker.models.generative.gguf_file import GgufFile

_CONTROL_TOKEN = 3  # tokenizer.ggml.token_type

#: GGUF tensor name (``blk.N.`` prefix removed) -> Hugging Face name within ``model.layers.N.``
_LAYER_TENSORS = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(.+)")


def _config(metadata: dict[str, Any], tied: bool) -> Any:
    from transformers import LlamaConfig

    def key(name: str) -> Any:
        return metadata[f"llama.{name}"]

    heads = int(key("attention.head_count"))
    hidden = int(key("embedding_length"))
    return LlamaConfig(
        vocab_size=len(metadata["tokenizer.ggml.tokens"]),
        hidden_size=hidden,
        intermediate_size=int(key("feed_forward_length")),
        num_hidden_layers=int(key("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(metadata.get("llama.attention.head_count_kv", heads)),
        head_dim=int(metadata.get("llama.rope.dimension_count", hidden // heads)),
        max_position_embeddings=int(key("context_length")),
        rms_norm_eps=float(key("attention.layer_norm_rms_epsilon")),
        rope_parameters={
            "rope_type": "default",
            "rope_theta": float(metadata.get("llama.rope.freq_base", 10_000.0)),
        },
        tie_word_embeddings=tied,
        bos_token_id=metadata.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=metadata.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=metadata.get("tokenizer.ggml.padding_token_id"),
    )


def _unpermute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's interleaving of each head's two rotary halves."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
    )


def _hf_name(name: str) -> str | None:
    if name in _TOP_TENSORS:
        return _TOP_TENSORS[name]
    match = _LAYER_NAME.fullmatch(name)
    if match is None or match.group(2) not in _LAYER_TENSORS:
        return None
    return f"model.layers.{match.group(1)}.{_LAYER_TENSORS[match.group(2)]}"


def _state_dict(gguf: GgufFile, config: Any) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name in gguf.tensors:
        hf_name = _hf_name(name)
        if hf_name is None:
            continue  # e.g. rope_freqs: recomputed by the model
        tensor = gguf.tensor(name)
        if name.endswith("attn_q.weight"):
            tensor = _unpermute(tensor, config.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            tensor = _unpermute(tensor, config.num_key_value_heads)
        state[hf_name] = tensor
    return state


def _tokenizer(metadata: dict[str, Any]) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if metadata.get("tokenizer.ggml.model") != "gpt2":
        raise ConfigurationError(
            f"tokenizer {metadata.get('tokenizer.ggml.model')!r}: only byte-level BPE ('gpt2') "
            "GGUF tokenizers are supported; serve the model with hf-causal:DIR instead"
        )
    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    backend = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    types = metadata.get("tokenizer.ggml.token_type") or []
    backend.add_special_tokens([
        AddedToken(token, special=True, normalized=False)
        for token, kind in zip(tokens, types, strict=False)
        if kind == _CONTROL_TOKEN
    ])

    def token(key: str) -> str | None:
        index = metadata.get(f"tokenizer.ggml.{key}")
        return tokens[index] if index is not None else None

    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token=token("bos_token_id"),
        eos_token=token("eos_token_id"),
        unk_token=token("unknown_token_id"),
        pad_token=token("padding_token_id"),
        chat_template=metadata.get("tokenizer.chat_template"),
    )


def load_llama_gguf(path: Path) -> tuple[Any, Any]:
    """(model in float32 on the CPU, in eval mode; its tokenizer)."""
    from transformers import LlamaForCausalLM

    gguf = GgufFile(path)
    try:
        architecture = gguf.metadata.get("general.architecture")
        if architecture != "llama":
            raise ConfigurationError(
                f"{path}: GGUF architecture {architecture!r}; the GGUF loader reads 'llama' "
                "files only (serve other models with hf-causal:DIR)"
            )
        config = _config(gguf.metadata, tied="output.weight" not in gguf.tensors)
        state = _state_dict(gguf, config)
        tokenizer = _tokenizer(gguf.metadata)
    finally:
        gguf.close()
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = config.tie_word_embeddings
    missing = [name for name in missing if not (tied and name == "lm_head.weight")]
    if missing or unexpected:
        raise ConfigurationError(f"{path}: tensors missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    _rebuild_buffers(model)
    return model.eval(), tokenizer  # type: ignore[no-untyped-call]


def _rebuild_buffers(model: Any) -> None:
    """The rotary embedding (its frequencies are not in the file) was built on the meta
    device with the rest: build it again, on the CPU."""
    rotary = model.model.rotary_emb
    model.model.rotary_emb = type(rotary)(model.config)
