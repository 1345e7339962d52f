"""Which models a worker serves, built from their configuration (see ``config.py``)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from inferpool.errors import ConfigurationError, UnknownModel
from worker.batcher import BatchLimits
from worker.models.base import Model
from worker.models.config import ModelConfig

BUILTIN_MODELS = ("echo", "minilm")


def import_factory(path: str) -> object:
    """Import ``package.module:attribute``; errors name the path and say what is wrong."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"model factory {path!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"cannot import model module {module_name!r}: {error}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}") from None


def _text_options(config: ModelConfig) -> dict[str, Any]:
    return {
        "precision": config.quantization,
        "device": config.device,
        "max_sequence_length": config.max_sequence_length,
        "max_input_bytes": config.max_input_bytes,
        **config.options,
    }


def _build(config: ModelConfig) -> object:
    kind, _, target = config.loader.partition(":")
    if kind == "echo" and not target:
        from worker.models.echo import EchoModel

        return EchoModel()
    if kind == "minilm" and not target:
        from worker.models import minilm

        return minilm.create(**_text_options(config))
    if kind == "hf" and target:
        from worker.models.text_embedding import TextEmbeddingModel, TextEmbeddingOptions

        path = Path(target)
        return TextEmbeddingModel(
            config.name,
            config.version or path.name,
            path,
            TextEmbeddingOptions(**_text_options(config)),
        )
    if kind in ("torchscript", "exported") and target:
        from worker.models.tensor_model import TensorModel
        from worker.models.text_embedding import pick_device

        return TensorModel.load(
            config.name,
            config.version,
            kind,
            Path(target),
            pick_device(config.device),
            config.options,
        )
    if kind == "factory" and target:
        factory = import_factory(target)
        if not callable(factory):
            raise ConfigurationError(f"model factory {target!r} is not callable")
        return factory(**config.options)
    raise ConfigurationError(
        f"model {config.name!r}: unknown loader {config.loader!r}; use one of "
        f"{', '.join(BUILTIN_MODELS)}, hf:DIR, torchscript:FILE, exported:FILE, "
        "factory:package.module:function"
    )


def load_model(config: ModelConfig | str) -> Model:
    if isinstance(config, str):
        config = ModelConfig.from_spec(config)
    model = _build(config)
    if not isinstance(model, Model):
        raise ConfigurationError(
            f"{config.loader!r} returned {type(model).__name__}, which lacks the Model "
            "interface (name, version, validate, collate, forward, split)"
        )
    model.name = config.name
    if config.version is not None:
        model.version = config.version
    return model


class ModelRegistry:
    """The models one worker serves, by name, with their batch limits."""

    def __init__(self, models: Iterable[Model], configs: Iterable[ModelConfig] = ()) -> None:
        self._models: dict[str, Model] = {}
        for model in models:
            if model.name in self._models:
                raise ConfigurationError(f"model {model.name!r} is configured twice")
            self._models[model.name] = model
        self._configs = {config.name: config for config in configs}

    @classmethod
    def from_configs(cls, configs: Iterable[ModelConfig]) -> ModelRegistry:
        configs = list(configs)
        return cls((load_model(config) for config in configs), configs)

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> ModelRegistry:
        return cls.from_configs(ModelConfig.from_spec(spec) for spec in specs)

    def get(self, name: str) -> Model:
        try:
            return self._models[name]
        except KeyError:
            raise UnknownModel(
                f"model {name!r} is not served here; served models: {sorted(self._models)}"
            ) from None

    def limits(self, default_max_batch_size: int) -> dict[str, BatchLimits]:
        return {
            name: BatchLimits(
                config.max_batch_size or default_max_batch_size, config.max_batch_tokens
            )
            for name, config in self._configs.items()
        }

    def names(self) -> list[str]:
        return list(self._models)

    def __iter__(self) -> Iterator[Model]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)
