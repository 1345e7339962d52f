"""Model declarations: specs, the TOML file, loaders and their errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from inferpool.errors import ConfigurationError, InvalidInput
from inferpool.protocol.wire import WireTensor
from worker.models.config import BatchLimits, ModelConfig, model_configs, read_models_file
from worker.models.precision import Precision
from worker.models.registry import ModelRegistry, load_model


def test_specs_name_builtins_and_factories() -> None:
    assert ModelConfig.from_spec("echo") == ModelConfig(name="echo", loader="echo")
    config = ModelConfig.from_spec("mine = testing_models:vector")
    assert config.name == "mine" and config.loader == "factory:testing_models:vector"


def test_a_models_file_declares_loader_precision_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[[models]]\nname = "minilm"\nloader = "minilm"\nquantization = "int8"\n'
        "max_batch_size = 48\nmax_batch_tokens = 4096\nmax_sequence_length = 128\n"
        '\n[[models]]\nname = "doubler"\nloader = "factory:testing_models:vector"\n'
    )
    configs = model_configs(["echo", "minilm"], path)
    assert [c.name for c in configs] == ["minilm", "doubler", "echo"]
    assert configs[0].quantization is Precision.INT8 and configs[0].max_sequence_length == 128
    registry = ModelRegistry([load_model(configs[1])], configs[1:2])
    assert registry.limits(32) == {"doubler": BatchLimits(32, None)}


def test_a_wrong_models_file_names_the_model_and_field(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[[models]]\nname = "m"\nloader = "echo"\nquantisation = "int8"\n')
    with pytest.raises(ConfigurationError, match=r"model #1.*quantisation"):
        read_models_file(path)


@pytest.mark.parametrize(
    ("loader", "message"),
    [
        ("nonsense", "unknown loader"),
        ("factory:no_such_module_xyz:create", "cannot import"),
        ("factory:testing_models:NOPE", "no attribute"),
        ("factory:testing_models:CALL_LOG_ENV", "not callable"),
        ("torchscript:/no/such/file.pt", "no such file"),
    ],
)
def test_loader_errors_say_what_is_wrong(loader: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_model(ModelConfig(name="m", loader=loader))


def save_program(linear: torch.nn.Module, kind: str, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in 2.13
        if kind == "torchscript":
            torch.jit.save(torch.jit.script(linear), str(path))
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.export.export(linear, (torch.randn(2, 4),),
                                          dynamic_shapes=({0: batch},))
            torch.export.save(program, str(path))


@pytest.mark.parametrize("kind", ["torchscript", "exported"])
def test_a_saved_program_serves_tensors(tmp_path: Path, kind: str) -> None:
    linear = torch.nn.Linear(4, 2)
    path = tmp_path / "linear.pt2"
    save_program(linear, kind, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = load_model(ModelConfig(
            name="linear", loader=f"{kind}:{path}",
            options={"input_dtype": "float32", "input_shape": [4]},
        ))
    inputs = [torch.randn(4), torch.randn(4)]
    items = [model.validate(WireTensor.from_torch(x), {}) for x in inputs]
    outputs = model.split(model.forward(model.collate(items)), 2)
    with torch.no_grad():
        expected = linear(torch.stack(inputs))
    assert torch.allclose(torch.stack([o.to_torch() for o in outputs]), expected)
    with pytest.raises(InvalidInput, match="float32 of shape"):
        model.validate(WireTensor.from_torch(torch.zeros(3)), {})


def test_the_example_models_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "ops" / "models.example.toml"
    configs = read_models_file(example)
    assert [c.name for c in configs] == ["minilm", "echo"]
    assert configs[0].max_batch_tokens == 8192
