"""lstm_jax: recurrent networks as pure cell functions scanned over time with `lax.scan`.

Layers, lowest first; each imports only from those below it:
1. `cells`: pure step functions and their `init_*`;
2. `recurrence` (with the engines `fused`, `pallas_lstm`): runs a cell over time;
3. `models` (and `summary`, `interop`, `study`): Flax modules and tools on the layers;
4. `train`: the trainer every task shares (config, step, mesh, checkpoints, loop);
5. `tasks` (and `configs`, one per experiment): the jobs: IMDB sentiment, forecasting,
   character-level text generation;
6. `cli`: the `lstm-jax` command. `host` holds the process settings the command makes.

Importing the package changes nothing process-wide.
"""

__version__ = "0.1.0"  # the package's one version (pyproject.toml reads it from here)

from lstm_jax.cells import (
    CELLS,
    carry_lstm_cell,
    gru_cell,
    init_carry_lstm,
    init_gru,
    init_lstm,
    init_simple_rnn,
    lstm_cell,
    simple_rnn_cell,
)
from lstm_jax.models import Bidirectional, CharLM, Forecaster, SentimentClassifier
from lstm_jax.recurrence import ENGINES, bidirectional, rnn, stack
from lstm_jax.summary import summary
from lstm_jax.tasks.charlm import CharLMConfig, CharLMTask, Sampler
from lstm_jax.tasks.forecasting import ForecastConfig, ForecastTask
from lstm_jax.tasks.sentiment import Predictor, SentimentConfig, SentimentTask
from lstm_jax.train import Task, TrainConfig, Trainer, evaluate, fit

__all__ = [
    "CELLS",
    "ENGINES",
    "Bidirectional",
    "CharLM",
    "CharLMConfig",
    "CharLMTask",
    "ForecastConfig",
    "ForecastTask",
    "Forecaster",
    "Predictor",
    "Sampler",
    "SentimentClassifier",
    "SentimentConfig",
    "SentimentTask",
    "Task",
    "TrainConfig",
    "Trainer",
    "bidirectional",
    "carry_lstm_cell",
    "evaluate",
    "fit",
    "gru_cell",
    "init_carry_lstm",
    "init_gru",
    "init_lstm",
    "init_simple_rnn",
    "lstm_cell",
    "rnn",
    "simple_rnn_cell",
    "stack",
    "summary",
]
