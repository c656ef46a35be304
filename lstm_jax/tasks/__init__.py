"""The jobs, one package each, all on the shared trainer (`lstm_jax.train`).

`TASKS` maps a task's name (the `"task"` key of a run's `config.json`) to its class;
`build` makes a task from a config, `load` from a run directory.
"""

from __future__ import annotations

from pathlib import Path

from lstm_jax.tasks.charlm import CharLMConfig, CharLMTask
from lstm_jax.tasks.forecasting import ForecastConfig, ForecastTask
from lstm_jax.tasks.sentiment import SentimentConfig, SentimentTask
from lstm_jax.train import ConfigError, Task, TrainConfig
from lstm_jax.train.config import CONFIG_FILE, read_config_json

TASKS: dict[str, tuple[type[TrainConfig], type[Task]]] = {
    SentimentConfig.task: (SentimentConfig, SentimentTask),
    ForecastConfig.task: (ForecastConfig, ForecastTask),
    CharLMConfig.task: (CharLMConfig, CharLMTask),
}


def config_class(name: str) -> type[TrainConfig]:
    """The config class of task `name`; a clear error lists the tasks otherwise."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; the tasks are {sorted(TASKS)}")
    return TASKS[name][0]


def load_config(workdir: str | Path) -> TrainConfig:
    """The config saved in a run directory; an error naming the file when it is not one."""
    values = read_config_json(workdir)
    return config_class(values["task"]).from_dict(values, source=str(Path(workdir) / CONFIG_FILE))


def build(config: TrainConfig, data: str | Path | None = None) -> Task:
    """The task that `config` names, reading its data from `data` (a path; None: the
    task's default source, see each task's class)."""
    return TASKS[config.task][1](config, data=data)


def load(workdir: str | Path, data: str | Path | None = None) -> Task:
    """The task of the run in `workdir`, with its saved config."""
    return build(load_config(workdir), data)
