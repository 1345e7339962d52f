"""Which models a worker serves, built from their declarations (``config.py``) by their
loaders (``loaders.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from inferpool.errors import ConfigurationError, UnknownModel
from worker.models.base import Model
from worker.models.config import BatchLimits, ModelConfig
from worker.models.loaders import build


def load_model(config: ModelConfig | str) -> Model:
    if isinstance(config, str):
        config = ModelConfig.from_spec(config)
    model = build(config)
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
