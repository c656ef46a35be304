"""The package's layers (../shared/STYLE.md): each module imports only from its own layer
and those below it, and nothing in `lstm_jax` imports the benchmark or another framework."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lstm_jax"

# The layer of each module, lowest first; a package's modules share its layer.
LAYERS = {
    "lstm_jax.cells": 1,
    "lstm_jax.host": 1,
    "lstm_jax.recurrence": 2,
    "lstm_jax.fused": 2,
    "lstm_jax.pallas_lstm": 2,
    "lstm_jax.cpu_kernel": 2,
    "lstm_jax.models": 3,
    "lstm_jax.summary": 3,
    "lstm_jax.interop": 3,
    "lstm_jax.study": 3,
    "lstm_jax.train": 4,
    "lstm_jax.tasks": 5,
    "lstm_jax.configs": 5,
    "lstm_jax.cli": 6,
    "lstm_jax": 7,  # the package's __init__: re-exports
}
FOREIGN = ("torch", "keras", "tensorflow", "benchmarks")
# The one place another framework may be imported: TensorFlow Datasets' IMDB, on request.
ALLOWED_FOREIGN = {"lstm_jax.tasks.sentiment.data": ("tensorflow", "tensorflow_datasets")}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    while module not in LAYERS:
        module = module.rpartition(".")[0]
    return LAYERS[module]


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[_module(p) for p in MODULES])
def test_imports_run_down_the_layers(path):
    module = _module(path)
    own = _layer(module)
    upward = [
        name
        for name in _imports(path)
        if name.startswith("lstm_jax.") and _imports_module(name) and _layer(name) > own
    ]
    assert not upward, f"{module} (layer {own}) imports from above: {upward}"
    allowed = ALLOWED_FOREIGN.get(module, ())
    foreign = [
        name
        for name in _imports(path)
        if name.split(".")[0] in FOREIGN and name.split(".")[0] not in allowed
    ]
    assert not foreign, f"{module} imports {foreign}"


def _imports_module(name: str) -> bool:
    """Whether `name` is a module of the package (not a name imported from one)."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_every_module_has_a_layer():
    assert all(_layer(_module(p)) for p in MODULES)
