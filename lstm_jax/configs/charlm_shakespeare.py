"""The character-level LSTM language model on Tiny Shakespeare (1,115,394 characters, 65
symbols; the first 90% trains, the last 10% validates): Embedding(65, 64) -> LSTM(512)
-> LSTM(512) -> Dense(65), dropout 0.25, weight drop 0.2 on the recurrent kernels, random
windows of 128 characters, batches of 64, bfloat16 matmul inputs; AdamW (weight decay 0.1
on the matrices) for 14 epochs at a rate rising linearly to 3e-3 over the first half
epoch, held to 70% of the steps and then decayed linearly to 0 (warmup-stable-decay),
gradient clip 5.

Command:
    lstm-jax train --config charlm_shakespeare --workdir runs/charlm
    lstm-jax generate --workdir runs/charlm --prompt "ROMEO:" --length 500 --temperature 0.8
Result (AMD EPYC, 2 cores, 2 JAX devices): validation loss 1.4241 nats/char (2.055 bits)
after 14 epochs (19.6 minutes of training steps); 1.398 when the validation text is read
as 64 streams (docs/charlm.md); 1.4275, 1.4323, 1.4303 and 1.4357 with seeds 1 to 4 (mean
of the five 1.4300). Without the warm-up, seeds 0-2: 1.4298, 1.442 and 1.4294 (mean 1.434,
against 1.428 with it). Intel Xeon with AMX, seeds 0 and 1: 1.4233 and 1.4300 in 14.0
minutes.
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
        epochs=14,
        learning_rate=3e-3,
        warmup_epochs=0.5,
        schedule="wsd",
        decay_fraction=0.3,
        clip_norm=5.0,
        weight_decay=0.1,
        matmul_dtype="bfloat16",
    )
