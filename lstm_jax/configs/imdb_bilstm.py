"""IMDB sentiment, single BiLSTM: Embedding(8185, 64) -> Bi(LSTM(64)) -> Dense(64) -> Dense(1).

Command:
    lstm-jax train --config imdb_bilstm --workdir runs/imdb_bilstm \
        --data ../shared/data/aclImdb_labeled.tar.gz
Result (2-core CPU VM, data-parallel over 2 CPU devices, the default of `lstm-jax`):
test accuracy 88.58%, test loss 0.280, best validation epoch 5 of 5.
"""

from lstm_jax.tasks.sentiment import SentimentConfig


def get_config() -> SentimentConfig:
    return SentimentConfig(
        model="bilstm",
        normalize_text=True,
        dropout=0.4,
        learning_rate=2e-3,
        schedule="cosine",
        epochs=5,
    )
