"""The loader table: every loader checks its target and its own options the same way."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from inferpool.errors import ConfigurationError
from worker.models.config import ModelConfig
from worker.models.loaders import LOADERS
from worker.models.precision import Precision
from worker.models.registry import load_model


def test_every_loader_is_listed_in_the_unknown_loader_message() -> None:
    with pytest.raises(ConfigurationError) as error:
        load_model(ModelConfig(name="m", loader="nonsense"))
    for loader in LOADERS.values():
        assert loader.usage in str(error.value)


@pytest.mark.parametrize("loader", ["echo:extra", "hf", "torchscript", "factory"])
def test_a_target_where_none_belongs_or_none_where_one_does_is_refused(loader: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown loader"):
        load_model(ModelConfig(name="m", loader=loader))


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such directory"):
        load_model(ModelConfig(name="m", loader=f"hf:{tmp_path / 'absent'}"))


def test_an_unknown_option_names_what_the_loader_accepts() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option\(s\) colour.*accepts: none"):
        load_model(ModelConfig(name="m", loader="echo", options={"colour": "red"}))


def test_a_text_loader_refuses_a_misspelt_option_before_loading_anything() -> None:
    with pytest.raises(ConfigurationError, match=r"calibraton_file.*calibration_file"):
        load_model(ModelConfig(name="m", loader="minilm", options={"calibraton_file": "x"}))


def test_a_mistyped_option_is_a_configuration_error(tmp_path: Path) -> None:
    program = tmp_path / "p.pt"
    program.write_bytes(b"not used")
    with pytest.raises(ConfigurationError, match=r"options\.input_shape"):
        load_model(ModelConfig(name="m", loader=f"torchscript:{program}",
                               options={"input_dtype": "float32", "input_shape": "four"}))


def test_factory_options_go_to_the_factory_as_keywords() -> None:
    model = load_model(ModelConfig(name="mine", loader="factory:testing_models:vector"))
    assert model.name == "mine"
    with pytest.raises(ConfigurationError, match=r"does not take the options \['surprise'\]"):
        load_model(ModelConfig(name="m", loader="factory:testing_models:vector",
                               options={"surprise": 1}))


def saved_linear(tmp_path: Path) -> Path:
    path = tmp_path / "linear.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(path))
    return path


def test_a_program_runs_in_fp32_on_the_cpu_and_says_so(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = load_model(ModelConfig(
            name="linear", loader=f"torchscript:{saved_linear(tmp_path)}", device="cpu",
            options={"input_dtype": "float32", "input_shape": [4]},
        ))
    choice = model.choice  # type: ignore[attr-defined]
    assert choice.precision is Precision.NONE and choice.agreement is None


def test_a_reduced_precision_a_program_cannot_have_here_is_refused_clearly(
    tmp_path: Path,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ConfigurationError, match="fp16/bf16 only on CUDA"):
            load_model(ModelConfig(
                name="linear", loader=f"torchscript:{saved_linear(tmp_path)}", device="cpu",
                quantization=Precision.FP16,
                options={"input_dtype": "float32", "input_shape": [4]},
            ))
