"""IMDB sentiment, stacked BiLSTM: Embedding(8185, 64) -> Bi(LSTM(64), sequences)
-> Bi(LSTM(32)) -> Dense(64) -> Dense(1).

Command:
    lstm-jax train --config imdb_stacked --workdir runs/imdb_stacked \
        --data ../shared/data/aclImdb_labeled.tar.gz
Result (2-core CPU VM, data-parallel over 2 CPU devices, the default of `lstm-jax`):
test accuracy 88.98%, test loss 0.282, best validation epoch 6 of 6.
"""

from lstm_jax.tasks.sentiment import SentimentConfig


def get_config() -> SentimentConfig:
    return SentimentConfig(
        model="stacked",
        normalize_text=True,
        dropout=0.3,
        learning_rate=2e-3,
        schedule="cosine",
        epochs=6,
    )
