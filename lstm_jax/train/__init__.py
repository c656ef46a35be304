"""The trainer every task shares (it imports no task).

- `config`: `TrainConfig`, the fields every task's config holds, and `config.json`;
- `task`: the `Task` protocol, what the trainer asks of a task;
- `step`: the pure pieces: state, optimizer, `train_step`, `eval_step`, metric sums;
- `trainer`: `Trainer`, the steps jitted once, data-parallel over a mesh of devices;
- `checkpoints`, `history`, `rundir`: Orbax checkpoints, the curves, a run directory's rules;
- `loop`: `fit`, `evaluate` and `load_params` of a run.
"""

from lstm_jax.train.config import ConfigError, TrainConfig
from lstm_jax.train.loop import Diverged, Interrupted, evaluate, fit, load_params
from lstm_jax.train.rundir import RunError
from lstm_jax.train.step import TrainState, eval_step, make_optimizer, train_step
from lstm_jax.train.task import Task
from lstm_jax.train.trainer import Trainer, data_mesh

__all__ = [
    "ConfigError",
    "Diverged",
    "Interrupted",
    "RunError",
    "Task",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "data_mesh",
    "eval_step",
    "evaluate",
    "fit",
    "load_params",
    "make_optimizer",
    "train_step",
]
