"""Experiment configs: one module per experiment, its docstring the command and the result."""

from __future__ import annotations

import importlib
import pkgutil

from lstm_jax.config import TrainConfig


def names() -> list[str]:
    """The experiments available to `lstm-jax train --config NAME`."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def get(name: str | None, *, model: str | None = None) -> TrainConfig:
    """Config `name`; without a name, the IMDB experiment of `model` (default: bilstm)."""
    name = name or f"imdb_{model or 'bilstm'}"
    if name not in names():
        raise ValueError(f"unknown config {name!r}; choose one of {names()}")
    return importlib.import_module(f"{__name__}.{name}").get_config()
