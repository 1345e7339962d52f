"""Which models a worker serves, loaded from specs: ``name`` (built in) or
``name=package.module:factory`` (a user's model; ``factory()`` returns a Model)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator

from inferpool.errors import ConfigurationError, UnknownModel
from worker.models.base import Model

BUILTIN_MODELS: dict[str, str] = {
    "echo": "worker.models.echo:create",
}


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


def load_model(spec: str) -> Model:
    name, sep, path = spec.partition("=")
    name = name.strip()
    if not sep:
        if name not in BUILTIN_MODELS:
            raise ConfigurationError(
                f"unknown built-in model {name!r}; built in: {sorted(BUILTIN_MODELS)}, "
                "or give 'name=package.module:factory'"
            )
        path = BUILTIN_MODELS[name]
    factory = import_factory(path.strip())
    if not callable(factory):
        raise ConfigurationError(f"model factory {path!r} is not callable")
    model = factory()
    if not isinstance(model, Model):
        raise ConfigurationError(
            f"{path!r} returned {type(model).__name__}, which lacks the Model interface "
            "(name, version, validate, collate, forward, split)"
        )
    model.name = name
    return model


class ModelRegistry:
    """The models one worker serves, by name."""

    def __init__(self, models: Iterable[Model]) -> None:
        self._models: dict[str, Model] = {}
        for model in models:
            if model.name in self._models:
                raise ConfigurationError(f"model {model.name!r} is configured twice")
            self._models[model.name] = model

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> ModelRegistry:
        return cls(load_model(spec) for spec in specs)

    def get(self, name: str) -> Model:
        try:
            return self._models[name]
        except KeyError:
            raise UnknownModel(
                f"model {name!r} is not served here; served models: {sorted(self._models)}"
            ) from None

    def names(self) -> list[str]:
        return list(self._models)

    def __iter__(self) -> Iterator[Model]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)
