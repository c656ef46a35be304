"""lstm_jax: recurrent networks as pure cell functions scanned over time with `lax.scan`.

Layers, lowest first: `cells` (pure step functions), `recurrence` (the one place that runs
a cell over time), `models` (Flax Linen classifiers), `data`/`tokenizer` and `training`
(the IMDB job), `study` (BPTT and vanishing gradients), `cli` (the `lstm-jax` command).
"""

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
from lstm_jax.config import TrainConfig
from lstm_jax.data import Batch, DataError, Split, batches, load_imdb, split_validation
from lstm_jax.models import Bidirectional, SentimentClassifier
from lstm_jax.recurrence import bidirectional, rnn, stack
from lstm_jax.summary import summary
from lstm_jax.tokenizer import SubwordTokenizer

__all__ = [
    "CELLS",
    "Batch",
    "Bidirectional",
    "DataError",
    "SentimentClassifier",
    "Split",
    "SubwordTokenizer",
    "TrainConfig",
    "batches",
    "bidirectional",
    "carry_lstm_cell",
    "gru_cell",
    "init_carry_lstm",
    "init_gru",
    "init_lstm",
    "init_simple_rnn",
    "load_imdb",
    "lstm_cell",
    "rnn",
    "simple_rnn_cell",
    "split_validation",
    "stack",
    "summary",
]
