"""lstm_jax: recurrent networks as pure cell functions scanned over time with `lax.scan`."""

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
from lstm_jax.models import Bidirectional, SentimentClassifier
from lstm_jax.recurrence import bidirectional, rnn, stack

__all__ = [
    "CELLS",
    "Bidirectional",
    "SentimentClassifier",
    "bidirectional",
    "carry_lstm_cell",
    "gru_cell",
    "init_carry_lstm",
    "init_gru",
    "init_lstm",
    "init_simple_rnn",
    "lstm_cell",
    "rnn",
    "simple_rnn_cell",
    "stack",
]
