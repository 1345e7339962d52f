"""The model loaders, as a table: a loader's name -> what its target is, its own options
type, and the function that builds the model.

A model's ``loader`` is ``NAME`` or ``NAME:TARGET`` (``hf:/models/e5``,
``torchscript:/models/resnet.pt``, ``factory:mypackage.models:create``). Loading one goes
the same way for every loader: look the name up, check the target (a file, a directory,
an import path), validate ``options`` against the loader's options type (an unknown or
mistyped option is a ConfigurationError naming the loader and what it accepts), choose the
device, build. The accuracy guard (``worker.models.precision.choose``) is called by every
loader that offers reduced precisions.

A new loader is one entry in ``LOADERS``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from inferpool.errors import ConfigurationError
from worker.models.config import ModelConfig

Target = Literal["none", "file", "directory", "import"]


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """What a loader's build function gets: the declaration, its checked target and its
    validated options."""

    config: ModelConfig
    target: str
    options: Any


@dataclass(frozen=True, slots=True)
class Loader:
    build: Callable[[LoadRequest], object]
    options: Callable[[], type[Any]]  # its options type (a pydantic model or a dataclass)
    target: Target = "none"
    usage: str = ""  # how the loader is written, for messages: "hf:DIR"
    # What is validated as its options: by default the declaration's ``options`` table.
    declared: Callable[[ModelConfig], Mapping[str, Any]] = lambda config: config.options


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FreeOptions(BaseModel):
    """Any options: handed to the factory as keyword arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)


class TensorOptions(BaseModel):
    """A TorchScript or exported program: each request is one tensor of this dtype and shape
    (without the batch dimension)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_dtype: str
    input_shape: list[int]


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


# --- the builders -------------------------------------------------------------------------


def _text_fields(config: ModelConfig) -> dict[str, Any]:
    """What a text embedding model is configured with: the declaration's text fields, then
    its ``options`` table (which may override them)."""
    return {
        "precision": config.quantization,
        "device": config.device,
        "max_sequence_length": config.max_sequence_length,
        "max_input_bytes": config.max_input_bytes,
        **config.options,
    }


def _text_options() -> type[Any]:
    from worker.models.text_embedding import TextEmbeddingOptions

    return TextEmbeddingOptions


def _generative_fields(config: ModelConfig) -> dict[str, Any]:
    """What a generative model is configured with: its precision and device, then its
    ``options`` table."""
    return {"precision": config.quantization, "device": config.device, **config.options}


def _generative_options() -> type[Any]:
    from worker.models.generative.options import GenerativeOptions

    return GenerativeOptions


def _build_smollm2(request: LoadRequest) -> object:
    from worker.models.generative import smollm2
    from worker.models.generative.llama_gguf import load_llama_gguf
    from worker.models.generative.model import GenerativeModel

    path = smollm2.gguf_path()
    return GenerativeModel(request.config.name, smollm2.VERSION,
                           lambda: load_llama_gguf(path), request.options)


def _build_hf_causal(request: LoadRequest) -> object:
    from worker.models.generative.hf_causal import load_hf_causal
    from worker.models.generative.model import GenerativeModel

    path = Path(request.target)
    return GenerativeModel(request.config.name, request.config.version or path.name,
                           lambda: load_hf_causal(path), request.options)


def _build_echo(request: LoadRequest) -> object:
    from worker.models.echo import EchoModel

    return EchoModel()


def _build_minilm(request: LoadRequest) -> object:
    from worker.models import minilm
    from worker.models.text_embedding import TextEmbeddingModel

    return TextEmbeddingModel(request.config.name, minilm.VERSION, minilm.model_dir(),
                              request.options)


def _build_hf(request: LoadRequest) -> object:
    from worker.models.text_embedding import TextEmbeddingModel

    path = Path(request.target)
    return TextEmbeddingModel(request.config.name, request.config.version or path.name, path,
                              request.options)


def _build_program(request: LoadRequest) -> object:
    from worker.models.device import pick_device
    from worker.models.tensor_model import TensorModel

    kind = request.config.loader.partition(":")[0]
    options: TensorOptions = request.options
    return TensorModel.load(request.config.name, request.config.version, kind,
                            Path(request.target), pick_device(request.config.device),
                            options.input_dtype, options.input_shape,
                            request.config.quantization)


def _build_factory(request: LoadRequest) -> object:
    factory = import_factory(request.target)
    if not callable(factory):
        raise ConfigurationError(f"model factory {request.target!r} is not callable")
    try:
        inspect.signature(factory).bind(**request.options)
    except TypeError as error:
        raise ConfigurationError(
            f"model {request.config.name!r}: factory {request.target!r} does not take the "
            f"options {sorted(request.options)}: {error}"
        ) from None
    except ValueError:  # no signature to check (a builtin): let the call tell
        pass
    return factory(**request.options)


LOADERS: dict[str, Loader] = {
    "echo": Loader(_build_echo, lambda: NoOptions, usage="echo"),
    "minilm": Loader(_build_minilm, _text_options, usage="minilm", declared=_text_fields),
    "hf": Loader(_build_hf, _text_options, "directory", "hf:DIR", _text_fields),
    "torchscript": Loader(_build_program, lambda: TensorOptions, "file", "torchscript:FILE"),
    "exported": Loader(_build_program, lambda: TensorOptions, "file", "exported:FILE"),
    "smollm2": Loader(_build_smollm2, _generative_options, usage="smollm2",
                      declared=_generative_fields),
    "hf-causal": Loader(_build_hf_causal, _generative_options, "directory", "hf-causal:DIR",
                        _generative_fields),
    "factory": Loader(_build_factory, lambda: FreeOptions, "import",
                      "factory:package.module:function"),
}


# --- the one way a model is loaded ---------------------------------------------------------


def _unknown_loader(config: ModelConfig) -> ConfigurationError:
    usages = ", ".join(loader.usage for loader in LOADERS.values())
    return ConfigurationError(
        f"model {config.name!r}: unknown loader {config.loader!r}; use one of {usages}"
    )


def _check_target(config: ModelConfig, loader: Loader, target: str) -> None:
    if loader.target == "none":
        if target:
            raise _unknown_loader(config)
        return
    if not target:
        raise _unknown_loader(config)
    path = Path(target)
    if loader.target == "file" and not path.is_file():
        raise ConfigurationError(f"model {config.name!r}: no such file {path}")
    if loader.target == "directory" and not path.is_dir():
        raise ConfigurationError(f"model {config.name!r}: no such directory {path}")


def _accepted(options_type: type[Any]) -> list[str]:
    if dataclasses.is_dataclass(options_type):
        return [field.name for field in dataclasses.fields(options_type)]
    if issubclass(options_type, BaseModel):
        return list(options_type.model_fields)
    return []


def parse_options(config: ModelConfig, options_type: type[Any], raw: Mapping[str, Any]) -> Any:
    """``raw`` validated as ``options_type``; a ConfigurationError names what is wrong."""
    accepted = _accepted(options_type)
    extra_allowed = issubclass(options_type, BaseModel) and (
        options_type.model_config.get("extra") == "allow"
    )
    unknown = sorted(set(raw) - set(accepted)) if not extra_allowed else []
    if unknown:
        raise ConfigurationError(
            f"model {config.name!r} (loader {config.loader!r}): unknown option(s) "
            f"{', '.join(unknown)}; this loader accepts: {', '.join(accepted) or 'none'}"
        )
    try:
        return TypeAdapter(options_type).validate_python(dict(raw))
    except ValidationError as error:
        problems = "; ".join(
            f"options.{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ConfigurationError(
            f"model {config.name!r} (loader {config.loader!r}): {problems}"
        ) from None


def build(config: ModelConfig) -> object:
    """The model a declaration describes (not yet checked against the Model interface)."""
    name, _, target = config.loader.partition(":")
    loader = LOADERS.get(name)
    if loader is None:
        raise _unknown_loader(config)
    _check_target(config, loader, target)
    options_type = loader.options()
    raw = loader.declared(config)
    options = dict(raw) if options_type is FreeOptions else parse_options(config, options_type, raw)
    return loader.build(LoadRequest(config, target, options))
