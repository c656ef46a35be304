"""IMDB sentiment, stacked BiLSTM: Embedding(8185, 64) -> Bi(LSTM(64), sequences)
-> Bi(LSTM(32)) -> Dense(64) -> Dense(1).

Command:
    lstm-jax train --config imdb_stacked --workdir runs/imdb_stacked \
        --data ../shared/data/aclImdb_labeled.tar.gz
Result (2-core Intel Xeon VM, data-parallel over 2 CPU devices, the default of `lstm-jax`):
test accuracy 89.06%, best validation epoch 6 of 7; seeds 1 and 2: 89.09% and 89.02%
(mean 89.06%), 7 min 18 s to 7 min 27 s a run. Target replication (weight 0.5, every 8th
step), a seventh epoch and bfloat16 matmul inputs (float32 accumulation, gates and cell
state; issue 24, docs/imdb.md) joined dropout 0.3 and 6 epochs, which gave 88.98%, 88.46%
and 88.37%. With `--matmul-dtype float32` (for a CPU without bfloat16 arithmetic) the
recipe gave 88.88%, 88.94% and 89.14% in 10 min to 10 min 25 s.
"""

from lstm_jax.tasks.sentiment import SentimentConfig


def get_config() -> SentimentConfig:
    return SentimentConfig(
        model="stacked",
        normalize_text=True,
        dropout=0.3,
        target_replication=0.5,
        matmul_dtype="bfloat16",
        learning_rate=2e-3,
        schedule="cosine",
        epochs=7,
    )
