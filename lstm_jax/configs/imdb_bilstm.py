"""IMDB sentiment, single BiLSTM: Embedding(8185, 64) -> Bi(LSTM(64)) -> Dense(64) -> Dense(1).

Command:
    lstm-jax train --config imdb_bilstm --workdir runs/imdb_bilstm \
        --imdb-archive ../shared/data/aclImdb_labeled.tar.gz
Result (2-core AMD EPYC VM, CPU, jax 0.10.2): test accuracy 88.57%, test loss 0.278,
best validation epoch 5 of 5; 450 s of training epochs (shared machine) plus ~60 s for
data and tokenizer.
"""

from lstm_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model="bilstm",
        normalize_text=True,
        dropout=0.4,
        learning_rate=2e-3,
        schedule="cosine",
        epochs=5,
    )
