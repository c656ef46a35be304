"""Every experiment config: it loads, belongs to its task, survives a run directory's
config.json unchanged, and its docstring gives the command that trains it."""

import importlib

import pytest

from lstm_jax import configs, tasks


@pytest.mark.parametrize("name", configs.names())
def test_every_config_loads_saves_and_names_its_command(name, tmp_path):
    config = configs.get(name)
    assert type(config) is tasks.config_class(config.task)
    config.save(tmp_path)
    assert tasks.load_config(tmp_path) == config
    doc = importlib.import_module(f"lstm_jax.configs.{name}").__doc__
    assert f"lstm-jax train --config {name}" in " ".join(doc.replace("\\\n", " ").split())
