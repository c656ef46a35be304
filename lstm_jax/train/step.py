"""The pure pieces of training: the state, the optimizer, one train step, one eval step.

`train_step(state, batch, ...) -> (state, sums)` is pure and importable; `Trainer` jits it
once with the state donated. Metrics come back as sums (see `lstm_jax.train.task`) and
the host reads them only when it logs (`means`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from lstm_jax.train.config import TrainConfig

MetricsFn = Callable[..., dict[str, jax.Array]]


class TrainState(struct.PyTreeNode):
    """The step count, the parameters, the optimizer's state and, with `ema_decay`, an
    exponential moving average of the parameters (None without)."""

    step: jax.Array
    params: Any
    opt_state: Any
    ema: Any = None

    @property
    def eval_params(self) -> Any:
        """The parameters to evaluate, select and keep: the average where there is one."""
        return self.params if self.ema is None else self.ema


def make_optimizer(config: TrainConfig, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """The one place the optimizer is built: optional global-norm clip, then Adam with the
    config's learning-rate schedule (cosine: to 0 over `epochs * steps_per_epoch` steps;
    wsd: held, then linearly to 0 over the last `decay_fraction` of the steps after the
    warm-up), after `warmup_epochs` of a linear rise from 0; with `weight_decay`, AdamW's
    decoupled decay on the matrices (biases are not decayed)."""
    peak, total = config.learning_rate, config.epochs * steps_per_epoch
    # At least one step for any warm-up, and at least one step of the schedule after it.
    warmup = min(math.ceil(config.warmup_epochs * steps_per_epoch), total - 1)
    rate: Any = peak
    if config.schedule == "cosine" and warmup:
        rate = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total)
    elif config.schedule == "cosine":  # kept apart: runs without warm-up train as before
        rate = optax.cosine_decay_schedule(peak, total)
    elif config.schedule == "wsd":
        rate = _warmup_stable_decay(peak, warmup, total, config.decay_fraction)
    elif warmup:
        rate = optax.linear_schedule(0.0, peak, warmup)
    parts = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
    if not config.weight_decay:
        return optax.chain(*parts, optax.adam(rate))
    adamw = optax.adamw(rate, weight_decay=config.weight_decay, mask=_matrices)
    return optax.chain(*parts, adamw)


def _warmup_stable_decay(peak: float, warmup: int, total: int, fraction: float) -> Any:
    """The rate rising linearly from 0 over `warmup` steps, held at `peak`, then falling
    linearly to 0 at step `total` over the last `fraction` of the steps after the warm-up."""
    decay = max(1, round(fraction * (total - warmup)))

    def rate(step: jax.Array) -> jax.Array:
        rise = jnp.minimum(1.0, step / warmup) if warmup else 1.0
        fall = jnp.clip((total - step) / decay, 0.0, 1.0)
        return peak * jnp.minimum(rise, fall)

    return rate


def _matrices(params: Any) -> Any:
    """True at the leaves with two or more axes (the weight matrices and the embedding)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def init_state(
    params: Any, optimizer: optax.GradientTransformation, *, ema: bool = False
) -> TrainState:
    """Step 0 with `params`, the optimizer's initial state and (`ema`) their average."""
    average = jax.tree.map(jnp.copy, params) if ema else None
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), average)


def _averaged(ema: Any, params: Any, step: jax.Array, decay: float) -> Any:
    """`ema` moved towards `params`: `d ema + (1 - d) params`, with the decay warming up
    as `min(decay, (1 + step) / (10 + step))`, so the first steps' parameters fade fast."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)


def _across(axis_name: str | None, tree: Any) -> Any:
    """`tree` summed over the devices of `axis_name` (itself when there is no axis)."""
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def train_step(
    state: TrainState,
    batch: Any,
    *,
    metrics_fn: MetricsFn,
    optimizer: optax.GradientTransformation,
    seed: int = 0,
    axis_name: str | None = None,
    ema_decay: float = 0.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on the mean loss of the batch's real examples.

    `metrics_fn(params, batch, train=True, rng=key)` is the task's `metrics`. Dropout's
    key is `fold_in(key(seed), step)`, so a resumed run draws the same masks. Under
    `shard_map` over `axis_name`, `batch` is this device's slice: the key is also folded
    with the device's index, and the gradient of the loss *sum* is taken on each slice and
    divided by the count after one sum over the axis, so the step's only collective comes
    after all its compute (`Trainer._settled` says why that matters on a CPU). With
    `ema_decay`, the state's average of the parameters follows the new parameters.
    """
    key = jax.random.fold_in(jax.random.key(seed), state.step)
    if axis_name is not None:
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))

    def loss_fn(params):
        sums = metrics_fn(params, batch, train=True, rng=key)
        return sums["loss"], sums

    grad_sums, sums = _across(axis_name, jax.grad(loss_fn, has_aux=True)(state.params))
    grads = jax.tree.map(lambda g: g / jnp.maximum(sums["count"], 1.0), grad_sums)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = None if state.ema is None else _averaged(state.ema, params, state.step, ema_decay)
    return TrainState(state.step + 1, params, opt_state, ema), sums


def eval_step(
    params: Any, batch: Any, *, metrics_fn: MetricsFn, axis_name: str | None = None
) -> dict[str, jax.Array]:
    """The task's sums of one batch without dropout (summed over `axis_name`)."""
    return _across(axis_name, metrics_fn(params, batch, train=False, rng=None))


def add(total: dict[str, jax.Array] | None, sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Running sums: `total + sums` leaf by leaf (`sums` when there is no total yet)."""
    return sums if total is None else jax.tree.map(jnp.add, total, sums)


def means(sums: dict[str, jax.Array]) -> dict[str, float]:
    """Each sum over the count, read on the host (the one sync of a log); loss first."""
    sums = jax.device_get(sums)
    count = max(float(sums["count"]), 1.0)
    names = ["loss", *sorted(set(sums) - {"loss", "count"})]
    return {k: float(sums[k]) / count for k in names}
