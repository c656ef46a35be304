"""Experiment configs, found by name: one module per experiment, its docstring the exact
command and the result it reaches, its `get_config()` a task's config."""

from __future__ import annotations

import importlib
import pkgutil

from lstm_jax.train import ConfigError, TrainConfig

DEFAULT = "imdb_bilstm"


def names() -> list[str]:
    """The experiments available to `lstm-jax train --config NAME`."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


def get(name: str = DEFAULT) -> TrainConfig:
    """The config of experiment `name`; a clear error lists the experiments otherwise."""
    if name not in names():
        raise ConfigError(f"unknown config {name!r}; choose one of {names()}")
    return importlib.import_module(f"{__name__}.{name}").get_config()
