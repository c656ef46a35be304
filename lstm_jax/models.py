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
# What the classifier's dense layers read: the last layer's final states (the tutorial), or
# the max and the mean of its outputs over each review's real steps.
HEADS = ("last", "pool")
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


def drop_connect(drop: nn.Dropout, params: dict) -> dict:
    """A cell's `params` with entries of its `recurrent_kernel` dropped by `drop` (a
    training-mode `nn.Dropout`): DropConnect, AWD-LSTM's weight drop. The masked kernel is
    just another parameter value, so the engines' loops run as they are."""
    return {**params, "recurrent_kernel": drop(params["recurrent_kernel"])}


class Bidirectional(nn.Module):
    """A bidirectional recurrent layer: `(xs <float>[B, T, E], lengths <int32>[B])` to
    `<float>[B, T, 2H]` (`return_sequences`) or `<float>[B, 2H]` (forward output at the
    last real step, backward output at the first). Parameters `forward` and `backward`
    are the cell's own pytrees (`lstm_jax.cells.init_*`). `return_state` adds the final
    output as a second result (`recurrence.stack`). `engine` is one of
    `recurrence.ENGINES`; `matmul_dtype="bfloat16"` gives the fused engines' matmuls
    bfloat16 inputs (`lstm_jax.recurrence.rnn`).

    `weight_drop` (with `train=True` and a "dropout" rng) drops entries of each
    direction's `recurrent_kernel`, one mask per call shared by the call's rows and time
    steps (DropConnect, AWD-LSTM's weight drop): a recurrent dropout that leaves the
    engines' loops as they are, since the masked kernel is just another parameter value.
    """

    hidden_size: int
    cell: str = "lstm"
    return_sequences: bool = False
    return_state: bool = False
    engine: str = recurrence.DEFAULT_ENGINE
    matmul_dtype: str | None = None
    weight_drop: float = 0.0

    @nn.compact
    def __call__(
        self, xs_BTE: jax.Array, lengths_B: jax.Array, *, train: bool = False
    ) -> jax.Array:
        spec = get_cell(self.cell)
        features = xs_BTE.shape[-1]
        params = {
            direction: self.param(direction, lambda key: spec.init(key, features, self.hidden_size))
            for direction in ("forward", "backward")
        }
        if self.weight_drop and train:  # a fresh mask per direction: two draws of one rng
            drop = nn.Dropout(self.weight_drop, deterministic=False, name="weight_drop")
            params = {direction: drop_connect(drop, p) for direction, p in params.items()}
        return recurrence.stack(
            spec,
            [params],
            xs_BTE,
            lengths_B,
            return_sequences=self.return_sequences,
            return_state=self.return_state,
            engine=self.engine,
            matmul_dtype=self.matmul_dtype,
        )


class PoolOverTime(nn.Module):
    """The max and the mean over each sequence's real steps: `(ys <float>[B, T, F],
    lengths <int32>[B])` to `<float>[B, 2F]`; padded steps take no part (zeros for an
    empty sequence)."""

    @nn.compact
    def __call__(self, ys_BTF: jax.Array, lengths_B: jax.Array) -> jax.Array:
        real_BT1 = (jnp.arange(ys_BTF.shape[1])[None] < lengths_B[:, None])[:, :, None]
        max_BF = jnp.where(real_BT1, ys_BTF, -jnp.inf).max(axis=1)
        max_BF = jnp.where(lengths_B[:, None] > 0, max_BF, 0.0)
        count_B1 = jnp.maximum(lengths_B, 1)[:, None].astype(ys_BTF.dtype)
        mean_BF = jnp.where(real_BT1, ys_BTF, 0.0).sum(axis=1) / count_B1
        return jnp.concatenate([max_BF, mean_BF], axis=-1)


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
    `layer_dropout_rate` drops features of a lower recurrent layer's outputs, the same
    features at every step of a review (variational dropout between the stacked layers).
    `embed_dropout_rate` drops embedding features, the same ones at every step of a
    review (spatial dropout), after the word dropout; `weight_drop` is the recurrent
    layers' (`Bidirectional`). `engine` and `matmul_dtype` (see `Bidirectional`) change
    no parameter either. `head="pool"` (beyond the tutorial) gives the dense layers the max
    and the mean of the last recurrent layer's outputs over the real steps
    (`PoolOverTime`, twice the features) instead of its final states.

    `replicate_every=k` (with `train=True`; the last-state head only): the dense layers
    also read the last recurrent layer's outputs at steps 0, k, 2k, ... (each with its own
    output dropout) and sow their logits, `<float>[B, ceil(T / k)]`, as
    `intermediates/step_logits`, for a loss that trains every such step towards the
    review's label (target replication, Lipton et al. 2015). At step t of a BiLSTM the
    outputs have read the whole review, the forward direction up to t and the backward
    one from t. The returned logits, and evaluation, read the final states as before; no
    parameter is added.
    """

    vocab_size: int
    kind: str = "bilstm"
    cell: str = "lstm"
    dropout_rate: float = 0.0
    layer_dropout_rate: float = 0.0
    embed_dropout_rate: float = 0.0
    weight_drop: float = 0.0
    head: str = "last"
    replicate_every: int = 0
    engine: str = recurrence.DEFAULT_ENGINE
    matmul_dtype: str | None = None

    @nn.compact
    def __call__(
        self, tokens_BT: jax.Array, lengths_B: jax.Array, *, train: bool = False
    ) -> jax.Array:
        widths = check_kind(self.kind)
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {HEADS}")
        pool = self.head == "pool"
        if self.replicate_every and pool:
            raise ValueError("replicate_every needs the last-state head, not head='pool'")
        replicate = self.replicate_every if train else 0
        if tokens_BT.ndim != 2:
            raise ValueError(f"tokens must be [batch, time], got shape {tokens_BT.shape}")
        x = nn.Embed(
            self.vocab_size, EMBED_DIM, embedding_init=_keras_embedding_init, name="embedding"
        )(tokens_BT)
        # Drops whole token vectors (word dropout), not single features.
        x = nn.Dropout(self.dropout_rate, broadcast_dims=(2,), deterministic=not train)(x)
        # Drops embedding features, the same ones at every step (axis 1 broadcast). Named,
        # so that the auto-named dropouts keep their names and so their masks.
        x = nn.Dropout(self.embed_dropout_rate, broadcast_dims=(1,), name="embed_dropout")(
            x, deterministic=not train
        )
        for depth, width in enumerate(widths):
            last = depth == len(widths) - 1
            x = Bidirectional(
                width,
                self.cell,
                return_sequences=pool or not last or bool(replicate),
                return_state=last and bool(replicate),
                engine=self.engine,
                matmul_dtype=self.matmul_dtype,
                weight_drop=self.weight_drop,
                name=f"bidirectional_{depth}",
            )(x, lengths_B, train=train)
            if not last and self.layer_dropout_rate:  # one mask for all steps: axis 1 broadcast
                rate = self.layer_dropout_rate
                x = nn.Dropout(rate, broadcast_dims=(1,), name=f"layer_dropout_{depth}")(
                    x, deterministic=not train
                )
        if pool:
            x = PoolOverTime(name="pooling")(x, lengths_B)
        dense = dict(kernel_init=nn.initializers.glorot_uniform())
        hidden = nn.Dense(DENSE_DIM, name="dense", **dense)
        logit = nn.Dense(1, name="logits", **dense)
        if replicate:
            ys_BTF, x = x
            steps = nn.Dropout(self.dropout_rate, name="step_dropout")(
                ys_BTF[:, ::replicate], deterministic=False
            )
            self.sow("intermediates", "step_logits", logit(nn.relu(hidden(steps)))[..., 0])
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return logit(nn.relu(hidden(x)))[:, 0]


DECODERS = ("direct", "autoregressive")


class Forecaster(nn.Module):
    """A recurrent regressor for time series: `xs <float32>[B, T, F]` (the target,
    normalised, in column 0) to `<float32>[B, steps]`, the next `steps` target values.

    `layers` stacked recurrent layers of `cell` (`lstm_jax.cells`) read the window; then
    `decoder="direct"`: a dense head maps the last layer's final output to all `horizon`
    steps at once (`steps` at most `horizon`); `"autoregressive"`: a decoder cell starts
    from the encoder's final carry and the last observed target, and each step's
    prediction (a dense readout of its output) is the next step's input, for any number
    of `steps` (one `recurrence.feedback` scan). Dropout (`train=True`, a "dropout" rng)
    acts between layers and before the direct head.

    `relative=True` makes the forecast a change from the window's last target value: the
    layers read the target's change from it, and their output is added to it, so a zero
    output is the persistence forecast and a series that trends away from the training
    part's range is forecast from where it is (the autoregressive decoder then feeds back
    changes). `keep_level=True` also gives them the target's level, a column more (it
    carries mean reversion; a trending series is better off without it).
    """

    horizon: int
    hidden: int = 64
    layers: int = 1
    cell: str = "lstm"
    decoder: str = "direct"
    dropout_rate: float = 0.0
    relative: bool = True
    keep_level: bool = True
    engine: str = recurrence.DEFAULT_ENGINE
    matmul_dtype: str | None = None

    @nn.compact
    def __call__(
        self, xs_BTF: jax.Array, *, train: bool = False, steps: int | None = None
    ) -> jax.Array:
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; choose one of {DECODERS}")
        if xs_BTF.ndim != 3:
            raise ValueError(f"inputs must be [batch, time, features], got {xs_BTF.shape}")
        steps = self.horizon if steps is None else steps
        if self.decoder == "direct" and steps > self.horizon:
            raise ValueError(
                f"a direct decoder forecasts at most its horizon ({self.horizon}) steps, "
                f"{steps} asked; train an autoregressive one for longer forecasts"
            )
        spec = get_cell(self.cell)
        batch, time, _ = xs_BTF.shape
        lengths = jnp.full((batch,), time, jnp.int32)
        level_B1 = jnp.zeros((batch, 1), xs_BTF.dtype)
        if self.relative:
            level_B1 = xs_BTF[:, -1, :1]
            change_BT1 = xs_BTF[:, :, :1] - level_B1[:, None]  # the target's change from it
            rest = xs_BTF if self.keep_level else xs_BTF[:, :, 1:]  # level: mean reversion
            xs_BTF = jnp.concatenate([change_BT1, rest], axis=-1)
        ys, width, carry = xs_BTF, xs_BTF.shape[-1], None
        options = dict(engine=self.engine, matmul_dtype=self.matmul_dtype)
        for depth in range(self.layers):
            params = self.param(
                f"layer_{depth}", lambda key, w=width: spec.init(key, w, self.hidden)
            )
            ys, carry = recurrence.rnn(spec, params, ys, lengths, **options)
            if depth < self.layers - 1:
                ys = nn.Dropout(self.dropout_rate, deterministic=not train)(ys)
            width = self.hidden
        if self.decoder == "direct":
            h = nn.Dropout(self.dropout_rate, deterministic=not train)(
                recurrence.final_output(carry)
            )
            dense = nn.Dense(self.horizon, kernel_init=nn.initializers.glorot_uniform())
            return dense(h)[:, :steps] + level_B1
        decoder = self.param("decoder", lambda key: spec.init(key, 1, self.hidden))
        kernel = self.param("readout", nn.initializers.glorot_uniform(), (self.hidden, 1))
        bias = self.param("readout_bias", nn.initializers.zeros, (1,))

        def emit(y_BH, t):
            value_B1 = y_BH @ kernel + bias[None]
            return value_B1[:, 0], value_B1

        _, values_BS = recurrence.feedback(
            spec, decoder, carry, jnp.zeros_like(level_B1), steps, emit
        )
        return values_BS + level_B1


class CharLM(nn.Module):
    """A character-level language model: `ids <int32>[B, T]` to next-symbol logits
    `<float32>[B, T, vocab_size]` at every position.

    Embedding -> `layers` stacked recurrent layers of `cell` (dropout after each, with
    `train=True` and a "dropout" rng) -> Dense(vocab_size). `weight_drop` drops entries of
    each layer's `recurrent_kernel` in training, one mask per call (`drop_connect`).
    `__call__` runs a window from `carries` (zeros when None; the fused engine only runs
    from zeros) and returns the layers' final carries too; `step` advances every layer by
    one symbol, for sampling.
    """

    vocab_size: int
    hidden: int = 512
    layers: int = 2
    embed_dim: int = 64
    cell: str = "lstm"
    dropout_rate: float = 0.0
    engine: str = recurrence.DEFAULT_ENGINE
    matmul_dtype: str | None = None
    weight_drop: float = 0.0

    def setup(self) -> None:
        spec = get_cell(self.cell)
        # Unit normal, as PyTorch's nn.Embedding: Flax's default (std 1/sqrt(embed_dim))
        # feeds the first layer an input too faint to learn from at first.
        self.embed = nn.Embed(
            self.vocab_size, self.embed_dim, embedding_init=nn.initializers.normal(1.0)
        )
        widths = [self.embed_dim] + [self.hidden] * (self.layers - 1)
        self.cells = [
            self.param(f"layer_{d}", lambda key, w=w: spec.init(key, w, self.hidden))
            for d, w in enumerate(widths)
        ]
        self.drop = nn.Dropout(self.dropout_rate)
        self.weight_dropper = nn.Dropout(self.weight_drop, deterministic=False)
        self.head = nn.Dense(self.vocab_size)

    def __call__(
        self, ids_BT: jax.Array, *, train: bool = False, carries: tuple | None = None
    ) -> tuple[jax.Array, tuple]:
        spec = get_cell(self.cell)
        batch, time = ids_BT.shape
        lengths = jnp.full((batch,), time, jnp.int32)
        options = dict(engine=self.engine, matmul_dtype=self.matmul_dtype)
        x, finals = self.embed(ids_BT), []
        for d, params in enumerate(self.cells):
            start = None if carries is None else carries[d]
            if self.weight_drop and train:  # a fresh mask per layer and call
                params = drop_connect(self.weight_dropper, params)
            x, carry = recurrence.rnn(spec, params, x, lengths, initial_carry=start, **options)
            finals.append(carry)
            x = self.drop(x, deterministic=not train)
        return self.head(x), tuple(finals)

    def step(self, carries: tuple, ids_B: jax.Array) -> tuple[jax.Array, tuple]:
        """One symbol per sequence through every layer: `(logits <float32>[B, vocab],
        carries)`."""
        spec = get_cell(self.cell)
        x, finals = self.embed(ids_B), []
        for params, carry in zip(self.cells, carries, strict=True):
            carry, x = spec.step(params, carry, x)
            finals.append(carry)
        return self.head(x), tuple(finals)

    def zero_carries(self, batch: int) -> tuple:
        """Every layer's initial carry for `batch` sequences (zeros)."""
        spec = get_cell(self.cell)
        return tuple(spec.zero_carry(batch, self.hidden) for _ in range(self.layers))
