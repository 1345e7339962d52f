"""How models are declared: ``INFERPOOL_MODELS`` specs and/or a TOML file
(``INFERPOOL_MODELS_FILE``), one ``[[models]]`` table per model::

    [[models]]
    name = "minilm"
    loader = "minilm"             # built in: echo, minilm
    quantization = "auto"         # auto | none | int8 | bf16 | fp16 | int8-weight-only
    device = "auto"               # auto | cpu | cuda | cuda:N
    max_batch_size = 64
    max_batch_tokens = 8192       # padded tokens per batch (text models)
    max_sequence_length = 256     # longer texts are truncated
    max_input_bytes = 16384       # larger texts are refused

    [[models]]
    name = "mine"
    loader = "factory:mypackage.models:create"   # also hf:DIR, torchscript:FILE, exported:FILE
    options = { threshold = 0.5 }                # keyword arguments for the factory
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferpool.errors import ConfigurationError
from worker.models.precision import Precision


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How big one model's batch may get: a count, and for text models a padded-token cap
    (the longest request's cost times the number of requests)."""

    max_batch_size: int
    max_batch_tokens: int | None = None


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._\-]{1,64}$")
    loader: str
    version: str | None = None
    quantization: Precision = Precision.AUTO
    device: str = "auto"
    max_batch_size: int | None = Field(default=None, gt=0)
    max_batch_tokens: int | None = Field(default=None, gt=0)
    max_sequence_length: int = Field(default=256, gt=2)
    max_input_bytes: int = Field(default=16_384, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: str) -> ModelConfig:
        """``name`` (a built-in) or ``name=package.module:factory``."""
        name, sep, path = (part.strip() for part in spec.partition("="))
        return cls(name=name, loader=f"factory:{path}" if sep else name)


def read_models_file(path: Path) -> list[ModelConfig]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"cannot read models file {path}: {error}") from None
    tables = document.get("models")
    if not isinstance(tables, list) or not tables:
        raise ConfigurationError(f"models file {path} has no [[models]] table")
    configs = []
    for index, table in enumerate(tables):
        try:
            configs.append(ModelConfig(**table))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
                for problem in error.errors()
            )
            raise ConfigurationError(
                f"models file {path}, model #{index + 1}: {problems}"
            ) from None
    return configs


def model_configs(specs: list[str], models_file: Path | None) -> list[ModelConfig]:
    """The file's models (if any), then those of the specs that the file does not name."""
    configs = read_models_file(models_file) if models_file is not None else []
    named = {config.name for config in configs}
    configs += [c for c in map(ModelConfig.from_spec, specs) if c.name not in named]
    return configs
