"""TextEmbeddingModel: a Hugging Face sentence encoder (BERT-like) served as text -> vector.

Input: a string. Output: its embedding, mean-pooled over the attention mask and L2
normalized (what sentence-transformers computes), as a float32 tensor. Loaded offline from
a local directory (config.json, model.safetensors, tokenizer files); never from a hub.

Texts longer than ``max_sequence_length`` tokens are truncated to it (as
sentence-transformers does); texts over ``max_input_bytes`` are refused before
tokenization. Tokenization runs once, in ``prepare`` (off the event loop).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as functional
from torch import nn

from inferpool.errors import ConfigurationError, InvalidInput
from inferpool.logs import get_logger
from inferpool.protocol.wire import WireTensor
from worker.models import text_sets
from worker.models.base import ListModel
from worker.models.outlier_int8 import quantize_outlier_int8
from worker.models.precision import AccuracyFloor, CheckEmbeddings, Precision, choose, ladder
from worker.models.quantization import quantize_int8

log = get_logger("worker.models.text_embedding")

WARMUP_BATCH_SIZES = (1, 8, 32, 64, 128)
CHECK_PER_CATEGORY = 16  # the guard's stratified sample of the built-in evaluation set
# ... except 6 of the 150-256-token paragraphs: 16 of them took 60 % of the guard's time,
# and they are the category int8 handles best
CHECK_LIMITS = {"paragraphs": 6}
USER_CATEGORY = "calibration_file"  # the guard's category for a user's held-out texts
_INT8_RECIPES = {"outlier": quantize_outlier_int8, "smoothquant": quantize_int8}


@dataclass(frozen=True, slots=True)
class TextEmbeddingOptions:
    precision: Precision = Precision.AUTO
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    max_sequence_length: int = 256
    max_input_bytes: int = 16_384
    floor: AccuracyFloor = field(default_factory=AccuracyFloor)
    warmup_batch_sizes: tuple[int, ...] = WARMUP_BATCH_SIZES
    # "recipe": "outlier" (quantize_outlier_int8, the default) or "smoothquant"
    # (quantize_int8, the earlier recipe); the other keys go to that function
    int8_options: Mapping[str, Any] | None = None
    # Texts like your traffic, one per line: int8 is calibrated on 3/4 of them as well as on
    # the built-in calibration set, and the accuracy guard checks the rest as one more
    # category ("calibration_file") next to the built-in ones.
    calibration_file: Path | None = None


def calibration_texts(path: Path | None) -> tuple[list[str], dict[str, list[str]]]:
    """(calibration set, check set by category): the built-in sets, plus a user's file split
    3:1 between them."""
    builtin = text_sets.load().calibration_texts()
    sample = text_sets.stratified(CHECK_PER_CATEGORY, CHECK_LIMITS)
    check = {name: list(texts) for name, texts in sample.items()}
    if path is None:
        return builtin, check
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except OSError as error:
        raise ConfigurationError(f"cannot read calibration_file {path}: {error}") from None
    texts = [line for line in lines if line][:1024]
    if len(texts) < 16:
        raise ConfigurationError(f"calibration_file {path} needs at least 16 non-empty lines")
    check[USER_CATEGORY] = texts[3::4]
    return [*builtin, *(t for i, t in enumerate(texts) if i % 4 != 3)], check


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {requested!r} was asked for but CUDA is not available")
    return device


class TextEmbeddingModel(ListModel):
    def __init__(
        self,
        name: str,
        version: str,
        model_dir: Path,
        options: TextEmbeddingOptions = TextEmbeddingOptions(),
    ) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        self.name, self.version, self.options = name, version, options
        self.device = pick_device(options.device)
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self._fp32: nn.Module = AutoModel.from_pretrained(
            str(model_dir), local_files_only=True, use_safetensors=True
        ).eval()
        self._sep = int(self.tokenizer.sep_token_id)
        self._pad = int(self.tokenizer.pad_token_id)
        # one set calibrates the quantizer, another (disjoint, by category) checks the result
        calibration, check = calibration_texts(options.calibration_file)
        self._calibration = self.prepare(calibration)
        self._check = {name: self.prepare(texts) for name, texts in check.items()}
        self._queries, self._passage_rows = self._retrieval_check(check)
        self.choice, self.encoder = choose(
            ladder(options.precision, self.device),
            self.build_encoder,
            self._embed_check_set,
            options.floor,
        )
        self.load_seconds = time.perf_counter() - started
        for mode, reason in self.choice.refused:
            log.warning("model.precision_refused", model=name, precision=mode.value, reason=reason)
        log.info(
            "model.loaded",
            model=name,
            version=version,
            device=str(self.device),
            precision=self.choice.precision.value,
            load_s=round(self.load_seconds, 2),
            agreement=str(self.choice.agreement) if self.choice.agreement else None,
            retrieval=str(self.choice.retrieval) if self.choice.retrieval else None,
        )

    @property
    def precision(self) -> Precision:
        return self.choice.precision

    # --- loading ------------------------------------------------------------------------

    def build_encoder(self, precision: Precision) -> nn.Module:
        module = self._fp32
        if precision is Precision.INT8:
            if self.device.type != "cpu":
                raise ConfigurationError("int8 dynamic quantization runs on the CPU only")
            by_length = sorted(self._calibration, key=len)
            batches = [self.collate(by_length[i : i + 32]) for i in range(0, len(by_length), 32)]
            options = dict(self.options.int8_options or {})
            recipe = options.pop("recipe", "outlier")
            if recipe not in _INT8_RECIPES:
                raise ConfigurationError(
                    f"int8_options recipe must be one of {sorted(_INT8_RECIPES)}, got {recipe!r}"
                )
            quantize: Any = _INT8_RECIPES[recipe]
            quantized: nn.Module = quantize(module, batches, **options)
            return quantized
        if precision is Precision.INT8_WEIGHT_ONLY:
            return _int8_weight_only(module, self.device)
        if precision in (Precision.BF16, Precision.FP16):
            dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float16
            import copy

            return copy.deepcopy(module).to(self.device, dtype)
        return module.to(self.device)

    def _retrieval_check(self, check: Mapping[str, Sequence[str]]) -> tuple[list[Any], list[int]]:
        """The built-in query/passage pairs whose passage is in the check set: the queries'
        token ids, and each passage's row in the concatenated check embeddings."""
        rows: dict[str, int] = {}
        for row, text in enumerate(text for texts in check.values() for text in texts):
            rows.setdefault(text, row)
        pairs = [pair for pair in text_sets.load().retrieval if pair.passage in rows]
        passages = list(dict.fromkeys(pair.passage for pair in pairs))
        return self.prepare([pair.query for pair in pairs]), [rows[p] for p in passages]

    def _embed(self, module: nn.Module, items: Sequence[Any]) -> torch.Tensor:
        rows = [self.encode(module, self.collate(items[i : i + 32]))
                for i in range(0, len(items), 32)]
        return torch.cat(rows)

    def _embed_check_set(self, module: nn.Module) -> CheckEmbeddings:
        categories = {name: self._embed(module, items) for name, items in self._check.items()}
        if not self._queries:
            return CheckEmbeddings(categories)
        every_row = torch.cat(list(categories.values()))
        return CheckEmbeddings(categories, self._embed(module, self._queries),
                               every_row[self._passage_rows])

    # --- requests -----------------------------------------------------------------------

    def validate(self, inputs: Any, params: Mapping[str, Any]) -> Any:
        if not isinstance(inputs, str):
            raise InvalidInput(
                f"model {self.name!r} expects a text (a string), got {type(inputs).__name__}"
            )
        if not inputs.strip():
            raise InvalidInput(f"model {self.name!r} got an empty text; send at least one word")
        size = len(inputs.encode("utf-8"))
        if size > self.options.max_input_bytes:
            raise InvalidInput(
                f"text is {size} bytes; model {self.name!r} accepts at most "
                f"{self.options.max_input_bytes}"
            )
        return inputs

    def prepare_one(self, text: str) -> list[int]:
        ids: list[int] = self.prepare([text])[0]
        return ids

    def prepare(self, items: Sequence[Any]) -> list[Any]:
        """Token ids of each text, truncated to max_sequence_length (ending with [SEP])."""
        encoded = self.tokenizer(
            list(items),
            add_special_tokens=True,
            truncation=False,
            return_attention_mask=False,
            verbose=False,
        )["input_ids"]
        limit = self.options.max_sequence_length
        return [ids if len(ids) <= limit else [*ids[: limit - 1], self._sep] for ids in encoded]

    def cost(self, item: Any) -> int:
        return len(item)

    def warmup(self) -> None:
        text = max(self._calibration[:32], key=len)
        for size in self.options.warmup_batch_sizes:
            self.forward(self.collate([text] * size))

    # --- batches ------------------------------------------------------------------------

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        length = max(len(ids) for ids in items)
        input_ids = torch.full((len(items), length), self._pad, dtype=torch.long)
        attention_mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, ids in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.device.type == "cuda":
            return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        return batch

    def forward(self, batch: Any) -> torch.Tensor:
        return self.encode(self.encoder, batch)

    def encode(self, module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            hidden = module(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return functional.normalize(pooled, dim=-1).to("cpu")

    def split(self, outputs: Any, count: int) -> Sequence[Any]:
        return [WireTensor.from_torch(row) for row in outputs]


def _int8_weight_only(module: nn.Module, device: torch.device) -> nn.Module:
    if device.type != "cuda":
        raise ConfigurationError("int8 weight-only quantization is for CUDA devices")
    import copy

    from torchao.quantization import Int8WeightOnlyConfig, quantize_  # type: ignore[import-not-found]

    quantized = copy.deepcopy(module).to(device, torch.float16)
    quantize_(quantized, Int8WeightOnlyConfig())
    return quantized
