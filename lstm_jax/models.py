"""Flax Linen models built on the functional recurrence: layers and the tasks' models.

Every recurrent layer hands its cell, parameters and padding to `lstm_jax.recurrence`;
`engine` and `matmul_dtype` are module fields passed down to it, so how a layer computes
is part of the module (and of what `jit` traces), never process state. Neither adds a
parameter: a checkpoint trained on one engine or dtype loads on another.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_jax import recurrence
from lstm_jax.cells import get_cell

# The recurrent widths of each classifier, lowest layer first (the tutorial's models).
KINDS: dict[str, tuple[int, ...]] = {"bilstm": (64,), "stacked": (64, 32)}
EMBED_DIM = 64
DENSE_DIM = 64


def check_kind(kind: str) -> tuple[int, ...]:
    """The recurrent widths of classifier `kind`; a clear error for an unknown kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(KINDS)}")
    return KINDS[kind]


def _keras_embedding_init(key, shape, dtype=jnp.float32):
    """Keras' `Embedding` default: uniform in [-0.05, 0.05]."""
    return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


class Bidirectional(nn.Module):
    """A bidirectional recurrent layer: `(xs <float>[B, T, E], lengths <int32>[B])` to
    `<float>[B, T, 2H]` (`return_sequences`) or `<float>[B, 2H]` (forward output at the
    last real step, backward output at the first). Parameters `forward` and `backward`
    are the cell's own pytrees (`lstm_jax.cells.init_*`). `engine` is one of
    `recurrence.ENGINES`; `matmul_dtype="bfloat16"` gives the fused engines' matmuls
    bfloat16 inputs (`lstm_jax.recurrence.rnn`)."""

    hidden_size: int
    cell: str = "lstm"
    return_sequences: bool = False
    engine: str = recurrence.DEFAULT_ENGINE
    matmul_dtype: str | None = None

    @nn.compact
    def __call__(self, xs_BTE: jax.Array, lengths_B: jax.Array) -> jax.Array:
        spec = get_cell(self.cell)
        features = xs_BTE.shape[-1]
        params = {
            direction: self.param(direction, lambda key: spec.init(key, features, self.hidden_size))
            for direction in ("forward", "backward")
        }
        return recurrence.stack(
            spec,
            [params],
            xs_BTE,
            lengths_B,
            return_sequences=self.return_sequences,
            engine=self.engine,
            matmul_dtype=self.matmul_dtype,
        )


class SentimentClassifier(nn.Module):
    """The tutorial's review classifier; one logit per review (sigmoid for P(positive)).

    `kind="bilstm"`:  Embedding(V, 64) -> Bidirectional(LSTM(64)) -> Dense(64, relu) -> Dense(1)
    `kind="stacked"`: Embedding(V, 64) -> Bidirectional(LSTM(64), return_sequences)
                      -> Bidirectional(LSTM(32)) -> Dense(64, relu) -> Dense(1)

    `apply({"params": p}, tokens <int32>[B, T], lengths <int32>[B]) -> <float32>[B]`.
    Padding is given by `lengths` (token ids past a review's length are ignored), so the
    logits of a review do not depend on how much padding its batch carries.
    `dropout_rate` (0 in the tutorial) drops whole token embeddings and features of the
    recurrent output when `train=True` (needs a "dropout" rng); it adds no parameters.
    `engine` and `matmul_dtype` (see `Bidirectional`) change no parameter either.
    """

    vocab_size: int
    kind: str = "bilstm"
    cell: str = "lstm"
    dropout_rate: float = 0.0
    engine: str = recurrence.DEFAULT_ENGINE
    matmul_dtype: str | None = None

    @nn.compact
    def __call__(
        self, tokens_BT: jax.Array, lengths_B: jax.Array, *, train: bool = False
    ) -> jax.Array:
        widths = check_kind(self.kind)
        if tokens_BT.ndim != 2:
            raise ValueError(f"tokens must be [batch, time], got shape {tokens_BT.shape}")
        x = nn.Embed(
            self.vocab_size, EMBED_DIM, embedding_init=_keras_embedding_init, name="embedding"
        )(tokens_BT)
        # Drops whole token vectors (word dropout), not single features.
        x = nn.Dropout(self.dropout_rate, broadcast_dims=(2,), deterministic=not train)(x)
        for depth, width in enumerate(widths):
            last = depth == len(widths) - 1
            x = Bidirectional(
                width,
                self.cell,
                return_sequences=not last,
                engine=self.engine,
                matmul_dtype=self.matmul_dtype,
                name=f"bidirectional_{depth}",
            )(x, lengths_B)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        dense = dict(kernel_init=nn.initializers.glorot_uniform())
        x = nn.relu(nn.Dense(DENSE_DIM, name="dense", **dense)(x))
        return nn.Dense(1, name="logits", **dense)(x)[:, 0]
