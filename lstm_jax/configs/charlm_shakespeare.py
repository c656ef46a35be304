"""The character-level LSTM language model on Tiny Shakespeare (1,115,394 characters, 65
symbols; the first 90% trains, the last 10% validates): Embedding(65, 64) -> LSTM(512)
-> LSTM(512) -> Dense(65), dropout 0.25, random windows of 128 characters, batches of 64,
bfloat16 matmul inputs; AdamW (weight decay 0.1 on the matrices) from 3e-3 with cosine
decay over 20 epochs, gradient clip 5.

Command:
    lstm-jax train --config charlm_shakespeare --workdir runs/charlm
    lstm-jax generate --workdir runs/charlm --prompt "ROMEO:" --length 500 --temperature 0.8
Result (Intel Xeon with AMX, 2 cores, 2 JAX devices): validation loss 1.451 nats/char
(2.093 bits) after 20 epochs of 53-54 s on a quiet machine (18 minutes); 1.423 when the
validation text is read as one stream (docs/charlm.md). Without weight decay: 1.459.
"""

from lstm_jax.tasks.charlm import CharLMConfig


def get_config() -> CharLMConfig:
    return CharLMConfig(
        text="../shared/data/tinyshakespeare.txt",
        window=128,
        hidden=512,
        layers=2,
        embed_dim=64,
        dropout=0.25,
        batch_size=64,
        epochs=20,
        learning_rate=3e-3,
        schedule="cosine",
        clip_norm=5.0,
        weight_decay=0.1,
        matmul_dtype="bfloat16",
    )
