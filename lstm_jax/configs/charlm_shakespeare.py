"""The character-level LSTM language model on Tiny Shakespeare (1,115,394 characters, 65
symbols; the first 90% trains, the last 10% validates): Embedding(65, 64) -> LSTM(512)
-> LSTM(512) -> Dense(65), dropout 0.25, weight drop 0.2 on the recurrent kernels, random
windows of 128 characters, batches of 64, bfloat16 matmul inputs; AdamW (weight decay 0.1
on the matrices) from 3e-3 with cosine decay over 20 epochs, gradient clip 5.

Command:
    lstm-jax train --config charlm_shakespeare --workdir runs/charlm
    lstm-jax generate --workdir runs/charlm --prompt "ROMEO:" --length 500 --temperature 0.8
Result (AMD EPYC, 2 cores, 2 JAX devices): validation loss 1.427 nats/char (2.059 bits)
after 20 epochs of 80-85 s (27.2 minutes); 1.401 when the validation text is read as 64
streams (docs/charlm.md). With Flax's default embedding init (std 1/8): 1.443.
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
        weight_drop=0.2,
        batch_size=64,
        epochs=20,
        learning_rate=3e-3,
        schedule="cosine",
        clip_norm=5.0,
        weight_decay=0.1,
        matmul_dtype="bfloat16",
    )
