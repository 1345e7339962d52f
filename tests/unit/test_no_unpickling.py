"""Static check: nothing in the packages unpickles. No ``pickle.load`` / ``pickle.loads`` /
``pickle.Unpickler`` (nor those of pickle's relatives), and no ``torch.load`` without
``weights_only=True``, anywhere in inferpool/, producer/, worker/, results/ -- found by
walking each module's AST, through ``import ... as`` and ``from ... import`` aliases."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("inferpool", "producer", "worker", "results")
PICKLE_MODULES = frozenset({"pickle", "_pickle", "cPickle", "dill", "cloudpickle"})
UNPICKLING = frozenset({"load", "loads", "Unpickler"})
TORCH_LOAD = ("torch", "load")


class Finder(ast.NodeVisitor):
    """Collects 'line: what' for each unpickling reference in one module."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}  # local name -> module it stands for
        self.names: dict[str, tuple[str, str]] = {}  # local name -> (module, attribute)
        self.problems: list[str] = []
        self._calls: set[int] = set()  # ids of nodes that are the function of a checked call

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            local = alias.asname or alias.name.split(".")[0]
            self.modules[local] = alias.name if alias.asname else local

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            local = alias.asname or alias.name
            if node.module in PICKLE_MODULES or node.module == "torch":
                self.names[local] = (node.module, alias.name)
            elif node.module == "torch.serialization" and alias.name == "load":
                self.names[local] = TORCH_LOAD

    def _resolve(self, node: ast.expr) -> tuple[str, str] | None:
        """(module, attribute) that ``node`` refers to, if it is one we track."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = node.value
            if isinstance(base, ast.Name) and base.id in self.modules:
                return self.modules[base.id], node.attr
            if (  # torch.serialization.load
                isinstance(base, ast.Attribute)
                and isinstance(base.value, ast.Name)
                and self.modules.get(base.value.id) == "torch"
                and base.attr == "serialization"
                and node.attr == "load"
            ):
                return TORCH_LOAD
        return None

    def _check(self, target: tuple[str, str] | None, node: ast.AST, call: ast.Call | None) -> None:
        if target is None:
            return
        module, attribute = target
        if module in PICKLE_MODULES and attribute in UNPICKLING:
            self.problems.append(f"{node.lineno}: {module}.{attribute}")
        elif target == TORCH_LOAD:
            safe = call is not None and any(
                keyword.arg == "weights_only"
                and isinstance(keyword.value, ast.Constant)
                and keyword.value.value is True
                for keyword in call.keywords
            )
            if not safe:
                self.problems.append(f"{node.lineno}: torch.load without weights_only=True")

    def visit_Call(self, node: ast.Call) -> None:
        self._check(self._resolve(node.func), node, node)
        self._calls.add(id(node.func))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) not in self._calls:  # a reference that is not called: e.g. an alias
            self._check(self._resolve(node), node, None)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if id(node) not in self._calls and isinstance(node.ctx, ast.Load):
            self._check(self._resolve(node), node, None)


def unpickling_in(source: str) -> list[str]:
    finder = Finder()
    tree = ast.parse(source)
    # Imports first, wherever they are in the module, so aliases are known when used.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            finder.visit(node)
    finder.visit(tree)
    return finder.problems


def package_modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_the_packages_are_there() -> None:
    modules = package_modules()
    assert {path.relative_to(ROOT).parts[0] for path in modules} == set(PACKAGES)
    assert len(modules) > 20


def test_nothing_in_the_packages_unpickles() -> None:
    problems = {
        str(path.relative_to(ROOT)): found
        for path in package_modules()
        if (found := unpickling_in(path.read_text(encoding="utf-8")))
    }
    assert not problems, f"unpickling found: {problems}"


@pytest.mark.parametrize(
    "source",
    [
        "import pickle\npickle.loads(b'')",
        "import pickle\nwith open('f', 'rb') as f:\n    pickle.load(f)",
        "import pickle as p\np.loads(data)",
        "from pickle import loads\nloads(data)",
        "from pickle import load as read\nread(f)",
        "import _pickle\n_pickle.Unpickler(f).load()",
        "import dill\ndill.loads(data)",
        "import pickle\nreader = pickle.loads",
        "def f(data):\n    import pickle\n    return pickle.loads(data)",
        "import torch\ntorch.load('m.pt')",
        "import torch\ntorch.load('m.pt', weights_only=False)",
        "import torch as t\nt.load('m.pt', map_location='cpu')",
        "from torch import load\nload('m.pt')",
        "import torch\ntorch.serialization.load('m.pt')",
        "import torch\nread = torch.load",
    ],
)
def test_the_check_finds_unpickling(source: str) -> None:
    assert unpickling_in(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import pickle\npickle.dumps(obj)",
        "import torch\ntorch.load('m.pt', weights_only=True)",
        "import torch\ntorch.load('m.pt', map_location='cpu', weights_only=True)",
        "import torch\ntorch.jit.load('m.pt')",
        "import json\njson.loads(text)",
        "import msgpack\nmsgpack.loads(data)",
        "def load(): ...\nload()",
    ],
)
def test_the_check_lets_safe_code_be(source: str) -> None:
    assert not unpickling_in(source), source
