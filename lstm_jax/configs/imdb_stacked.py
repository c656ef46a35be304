"""IMDB sentiment, stacked BiLSTM: Embedding(8185, 64) -> Bi(LSTM(64), sequences)
-> Bi(LSTM(32)) -> Dense(64) -> Dense(1).

Command:
    lstm-jax train --config imdb_stacked --workdir runs/imdb_stacked \
        --imdb-archive ../shared/data/aclImdb_labeled.tar.gz
Result: see the README's results table (test accuracy, wall time, machine).
"""

from lstm_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model="stacked",
        normalize_text=True,
        dropout=0.4,
        learning_rate=2e-3,
        schedule="cosine",
        epochs=5,
    )
