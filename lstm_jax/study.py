"""Instruments for studying recurrence: BPTT written out, gradient flow, long-range memory.

Everything here runs a cell from `lstm_jax.cells` over time through `lstm_jax.recurrence.rnn`
and puts a linear readout on top (a "tagger": one prediction per position). On that model:

- `sequence_labelling_loss`: the lecture's loss, per-position cross-entropy summed over the
  real positions of each sequence;
- `simple_rnn_bptt`: backpropagation through time for the simple RNN written out as a
  reverse `lax.scan`, equal to `jax.grad` of the scanned forward loss (see `docs/bptt.md`);
- `memory_task` / `train_memory_task`: remember the first token over `time - 1` distractors;
- `gradient_flow`: the norm of d(loss at the last step)/d(input at step t) against the
  distance to the last step, at initialisation or for given (e.g. trained) parameters;
- `run_gradient_flow` and `run_memory_table`: the two studies end to end (plain arguments
  in, a results dict out, PNG/JSON files written), the bodies of `scripts/gradient_flow.py`
  and `scripts/memory_task.py`.

Every long-running function takes `quick=True`, which shrinks it to a few seconds (short
sequences, few steps, one seed) for tests and notebooks.
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax import recurrence
from lstm_jax.cells import CELLS, get_cell

Array = jax.Array
Params = dict[str, Any]

# The memory task: K token classes; inputs are a token's one-hot code plus a
# "first position" flag (`memory_batch`).
MEMORY_CLASSES = 4
MEMORY_INPUT = MEMORY_CLASSES + 1

# `quick=True` settings: small enough that every study runs in seconds.
QUICK_TIME = 8
QUICK_STEPS = 3
QUICK_HIDDEN = 8
QUICK_BATCH = 8
QUICK_SEEDS = (0,)
QUICK_TIMES = (4, 8)

CLIP_NORM = 1.0
PLOT_FLOOR = 1e-20


# ----------------------------------------------------------------------------------
# The per-position model: a cell over time plus a linear readout.
# ----------------------------------------------------------------------------------
def init_tagger(
    key: Array, cell_name: str, input_size: int, hidden_size: int, num_classes: int
) -> Params:
    """Parameters of `tagger_logits`: `{"cell": <the cell's init_*>, "readout": {"kernel"
    <float32>[H, C] glorot-uniform, "bias" <float32>[C] zero}}`."""
    spec = get_cell(cell_name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    k_cell, k_readout = jax.random.split(key)
    limit = np.sqrt(6.0 / (hidden_size + num_classes))
    return {
        "cell": spec.init(k_cell, input_size, hidden_size),
        "readout": {
            "kernel": jax.random.uniform(
                k_readout, (hidden_size, num_classes), jnp.float32, -limit, limit
            ),
            "bias": jnp.zeros((num_classes,), jnp.float32),
        },
    }


def tagger_logits(cell_name: str, params: Params, xs_BTE: Array, lengths_B: Array) -> Array:
    """Per-position logits `<float>[batch, time, classes]` of a right-padded batch.

    `xs_BTE <float>[batch, time, input]`, `lengths_B <int32>[batch]`. Padded positions
    get the readout bias (the recurrence emits zeros there); the loss masks them.
    """
    ys_BTH, _ = recurrence.rnn(cell_name, params["cell"], xs_BTE, lengths_B)
    readout = params["readout"]
    return ys_BTH @ readout["kernel"] + readout["bias"][None, None]


def last_logits(cell_name: str, params: Params, xs_BTE: Array, lengths_B: Array) -> Array:
    """Logits `<float>[batch, classes]` at each sequence's last real step."""
    _, carry = recurrence.rnn(cell_name, params["cell"], xs_BTE, lengths_B)
    readout = params["readout"]
    return recurrence.final_output(carry) @ readout["kernel"] + readout["bias"][None]


def _real_mask(lengths_B: Array, time: int) -> Array:
    """`<bool>[batch, time]`: True on real positions."""
    return jnp.arange(time)[None, :] < lengths_B[:, None]


def sequence_labelling_loss(logits_BTC: Array, labels_BT: Array, lengths_B: Array) -> Array:
    """The lecture's sequence-labelling loss, one value per sequence.

        L_b = sum_{t < lengths[b]} -log softmax(logits[b, t])[labels[b, t]]

    Args:
      logits_BTC: `<float>[batch, time, classes]` predictions.
      labels_BT: `<int>[batch, time]` target class at each position; values on padded
        positions are ignored (they may be anything, e.g. -1).
      lengths_B: `<int32>[batch]` number of real positions of each sequence.

    Returns:
      `<float32>[batch]`: the summed cross-entropy of each sequence (0 for length 0).
    """
    if np.ndim(logits_BTC) != 3:
        raise ValueError(f"logits must be [batch, time, classes], got shape {np.shape(logits_BTC)}")
    batch, time, _ = np.shape(logits_BTC)
    if np.shape(labels_BT) != (batch, time):
        raise ValueError(
            f"labels must be [batch, time] = {(batch, time)} to match logits, "
            f"got shape {np.shape(labels_BT)}"
        )
    if np.shape(lengths_B) != (batch,):
        raise ValueError(f"lengths must be [batch] = [{batch}], got shape {np.shape(lengths_B)}")
    mask_BT = _real_mask(lengths_B, time)
    labels_BT = jnp.where(mask_BT, labels_BT, 0)
    nll_BT = optax.softmax_cross_entropy_with_integer_labels(
        logits_BTC.astype(jnp.float32), labels_BT
    )
    return jnp.sum(jnp.where(mask_BT, nll_BT, 0.0), axis=1)


def tagger_loss(
    cell_name: str, params: Params, xs_BTE: Array, labels_BT: Array, lengths_B: Array
) -> Array:
    """The batch's total sequence-labelling loss (a scalar): the sum of
    `sequence_labelling_loss` over sequences, computed by the scanned forward pass."""
    logits_BTC = tagger_logits(cell_name, params, xs_BTE, lengths_B)
    return jnp.sum(sequence_labelling_loss(logits_BTC, labels_BT, lengths_B))


# ----------------------------------------------------------------------------------
# Backpropagation through time, written out for the simple RNN.
# ----------------------------------------------------------------------------------
def simple_rnn_bptt(
    params: Params, readout: Params, xs_BTE: Array, labels_BT: Array, lengths_B: Array
) -> tuple[Params, Params]:
    """Gradients of `tagger_loss("simple_rnn", ...)` by an explicit backward recursion.

    With `a_t = x_t W + h_{t-1} U + b`, `h_t = tanh(a_t)`, `z_t = h_t V + c` and
    `L = sum_b sum_{t real} CE(z_t, label_t)`, the reverse scan carries `dh = dL/dh_t`
    (through the carry, from the steps after t) and at each real step t:

        dz_t    = softmax(z_t) - onehot(label_t)
        dV     += h_t^T dz_t,            dc += sum_batch dz_t
        da_t    = (dz_t V^T + dh) * (1 - h_t^2)
        dW     += x_t^T da_t,            dU += h_{t-1}^T da_t,        db += sum_batch da_t
        dh      = da_t U^T                         (dL/dh_{t-1}, passed to step t - 1)

    On a padded step the carry is passed through unchanged, so `dh` is too. See
    `docs/bptt.md`; `tests/test_study.py` checks this against `jax.grad`.

    Args:
      params: the simple RNN's parameters (`lstm_jax.cells.init_simple_rnn`): `kernel` W,
        `recurrent_kernel` U, `bias` b.
      readout: `{"kernel" <float>[H, C] (V), "bias" <float>[C] (c)}`.
      xs_BTE: `<float>[batch, time, input]` right-padded inputs.
      labels_BT: `<int>[batch, time]` labels (ignored on padding).
      lengths_B: `<int32>[batch]` number of real steps of each sequence.

    Returns:
      `(cell_grads, readout_grads)`, pytrees shaped like `params` and `readout`.
    """
    recurrence.check_inputs(xs_BTE, lengths_B)
    batch, time, _ = xs_BTE.shape
    if np.shape(labels_BT) != (batch, time):
        raise ValueError(
            f"labels must be [batch, time] = {(batch, time)}, got shape {np.shape(labels_BT)}"
        )
    kernel_V, bias_c = readout["kernel"], readout["bias"]
    recurrent_U = params["recurrent_kernel"]

    # Forward pass: the library's scan. Right padding means the carry entering a real
    # step t is the output of step t - 1 (zeros at t = 0).
    hs_BTH, _ = recurrence.rnn("simple_rnn", params, xs_BTE, lengths_B)
    hprev_BTH = jnp.concatenate([jnp.zeros_like(hs_BTH[:, :1]), hs_BTH[:, :-1]], axis=1)
    logits_BTC = hs_BTH @ kernel_V + bias_c[None, None]
    classes = logits_BTC.shape[-1]
    onehot_BTC = jax.nn.one_hot(labels_BT, classes, dtype=logits_BTC.dtype)
    mask_TB = recurrence.step_mask(lengths_B, time)

    zeros = jax.tree.map(jnp.zeros_like, (params, readout))
    dh_BH = jnp.zeros_like(hs_BTH[:, 0])

    def backward_step(carry, inputs):
        dh_BH, (g_cell, g_readout) = carry
        x_BE, hprev_BH, h_BH, logits_BC, onehot_BC, m_B = inputs
        real_B1 = m_B[:, None]
        dlogits_BC = jnp.where(real_B1, jax.nn.softmax(logits_BC, axis=-1) - onehot_BC, 0.0)
        da_BH = jnp.where(real_B1, (dlogits_BC @ kernel_V.T + dh_BH) * (1.0 - h_BH**2), 0.0)
        g_readout = {
            "kernel": g_readout["kernel"] + h_BH.T @ dlogits_BC,
            "bias": g_readout["bias"] + jnp.sum(dlogits_BC, axis=0),
        }
        g_cell = {
            "kernel": g_cell["kernel"] + x_BE.T @ da_BH,
            "recurrent_kernel": g_cell["recurrent_kernel"] + hprev_BH.T @ da_BH,
            "bias": g_cell["bias"] + jnp.sum(da_BH, axis=0),
        }
        dh_BH = jnp.where(real_B1, da_BH @ recurrent_U.T, dh_BH)
        return (dh_BH, (g_cell, g_readout)), None

    tm = recurrence.time_major
    inputs = (
        tm(xs_BTE),
        tm(hprev_BTH),
        tm(hs_BTH),
        tm(logits_BTC),
        tm(onehot_BTC),
        mask_TB,
    )
    (_, grads), _ = jax.lax.scan(backward_step, (dh_BH, zeros), inputs, reverse=True)
    return grads


# ----------------------------------------------------------------------------------
# The long-range memory task.
# ----------------------------------------------------------------------------------
def memory_batch(
    key: Array, batch: int, time: int, *, num_classes: int = MEMORY_CLASSES
) -> tuple[Array, Array]:
    """A batch of the memory task: recall the first token after `time - 1` distractors.

    Every token is drawn uniformly from `[0, num_classes)`; the first one is the label,
    the `time - 1` after it are distractors from the same vocabulary. Step t's input is the
    token's one-hot code followed by a flag that is 1 at t = 0 only (so "first" is visible
    in the input, and a cell can only ignore the later tokens by gating on that flag or
    on its own state; an input kernel cannot simply zero them out).

    Returns `(xs <float32>[batch, time, num_classes + 1], labels <int32>[batch])`.
    """
    if not isinstance(time, int) or time < 1:
        raise ValueError(f"time must be a positive int, got {time!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int of at least 2, got {num_classes!r}")
    tokens_BT = jax.random.randint(key, (batch, time), 0, num_classes)
    first_BT1 = jnp.broadcast_to(
        (jnp.arange(time) == 0).astype(jnp.float32)[None, :, None], (batch, time, 1)
    )
    xs_BTE = jnp.concatenate([jax.nn.one_hot(tokens_BT, num_classes), first_BT1], axis=-1)
    return xs_BTE, tokens_BT[:, 0]


def _full_lengths(batch: int, time: int) -> Array:
    return jnp.full((batch,), time, jnp.int32)


def memory_loss(cell_name: str, params: Params, xs_BTE: Array, labels_B: Array) -> Array:
    """The memory task's training loss: the sequence-labelling loss with the first token
    as the label of every position, averaged over the batch and the positions.

    Asking for the first token at every step (not only at the last) lets the gradient
    from short distances teach the cell to store the token before it must hold it long;
    the accuracy that counts is still the one at the last step (`memory_accuracy`).
    """
    batch, time, _ = xs_BTE.shape
    lengths_B = _full_lengths(batch, time)
    labels_BT = jnp.broadcast_to(labels_B[:, None], (batch, time))
    logits_BTC = tagger_logits(cell_name, params, xs_BTE, lengths_B)
    return jnp.mean(sequence_labelling_loss(logits_BTC, labels_BT, lengths_B)) / time


def make_optimizer(lr: float, clip_norm: float = CLIP_NORM) -> optax.GradientTransformation:
    """The studies' one optimizer: global-norm gradient clipping, then Adam."""
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(lr))


class MemoryRun(NamedTuple):
    """What `train_memory_task` returns: trained parameters (`init_tagger`'s layout),
    accuracy on a fresh evaluation batch and the training loss of every step."""

    params: Params
    accuracy: float
    losses: np.ndarray


def train_memory_task(
    cell_name: str,
    time: int,
    *,
    steps: int = 500,
    batch: int = 64,
    hidden: int = 32,
    seed: int = 0,
    lr: float = 1e-2,
    eval_batch: int = 1024,
    quick: bool = False,
) -> MemoryRun:
    """Train a tagger on the memory task with `time` steps per sequence (Adam, clipped).

    Batches are drawn inside the jitted step from `fold_in(key, step)`, so nothing moves
    between host and device until the end. `quick=True` caps `time`, `steps`, `hidden`,
    `batch` and `eval_batch` at tiny values (a smoke run, not a result).
    """
    get_cell(cell_name)
    if quick:
        time, steps = min(time, QUICK_TIME), min(steps, QUICK_STEPS)
        hidden, batch, eval_batch = (
            min(hidden, QUICK_HIDDEN),
            min(batch, QUICK_BATCH),
            min(eval_batch, 64),
        )
    for name, value in (("time", time), ("steps", steps), ("batch", batch), ("hidden", hidden)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    k_init, k_data, k_eval = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = init_tagger(k_init, cell_name, MEMORY_INPUT, hidden, MEMORY_CLASSES)
    optimizer = make_optimizer(lr)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, step):
        xs_BTE, labels_B = memory_batch(jax.random.fold_in(k_data, step), batch, time)
        loss, grads = jax.value_and_grad(memory_loss, argnums=1)(
            cell_name, params, xs_BTE, labels_B
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for step in range(steps):
        params, opt_state, loss = train_step(params, opt_state, step)
        losses.append(loss)
    return MemoryRun(
        params,
        memory_accuracy(cell_name, params, time, key=k_eval, batch=eval_batch),
        np.asarray(jnp.stack(losses)),
    )


def memory_accuracy(
    cell_name: str, params: Params, time: int, *, key: Array, batch: int = 1024
) -> float:
    """Fraction of a fresh memory-task batch whose label is predicted at the last step."""
    xs_BTE, labels_B = memory_batch(key, batch, time)
    logits_BC = jax.jit(last_logits, static_argnums=0)(
        cell_name, params, xs_BTE, _full_lengths(batch, time)
    )
    return float(jnp.mean(jnp.argmax(logits_BC, axis=-1) == labels_B))


def memory_task(
    cell_name: str,
    time: int,
    *,
    steps: int = 500,
    batch: int = 64,
    hidden: int = 32,
    seed: int = 0,
    lr: float = 1e-2,
    quick: bool = False,
) -> float:
    """Accuracy in [0, 1] of `cell_name` on the memory task of length `time` after
    `steps` Adam steps (chance is 1 / MEMORY_CLASSES). See `train_memory_task`."""
    return train_memory_task(
        cell_name, time, steps=steps, batch=batch, hidden=hidden, seed=seed, lr=lr, quick=quick
    ).accuracy


# ----------------------------------------------------------------------------------
# Gradient flow.
# ----------------------------------------------------------------------------------
def gradient_flow(
    cell_name: str,
    *,
    time: int = 100,
    hidden: int = 32,
    input_size: int = MEMORY_INPUT,
    seeds: Sequence[int] = (0, 1, 2),
    params: Params | None = None,
    batch: int = 32,
    quick: bool = False,
) -> np.ndarray:
    """`||d loss_T / d x_t||` against the distance `T - 1 - t`, averaged over seeds.

    The loss is the cross-entropy of the prediction at the last step of a memory-task
    batch (`memory_batch` with `input_size - 1` classes); the gradient with respect to the
    whole input sequence comes from one `jax.grad`. For each sequence the norm is taken
    over the input features at step t, then averaged over the batch and the seeds.

    Args:
      cell_name: a name from `lstm_jax.cells.CELLS`.
      time: sequence length T.
      hidden: hidden size of freshly initialised models.
      input_size: input features of fresh models: `num_classes + 1` of `memory_batch`.
      seeds: one fresh model and input batch per seed (only the batch when `params`).
      params: a tagger (`init_tagger` layout) to probe instead of fresh models; its sizes
        override `hidden`, `input_size` and the number of classes.
      batch: sequences per seed.
      quick: cap `time` at `QUICK_TIME` and use one seed.

    Returns:
      `<float64>[time]`: entry d is the mean gradient norm at distance d from the last
      step (d = 0 is the last input).
    """
    get_cell(cell_name)
    if quick:
        time, seeds = min(time, QUICK_TIME), tuple(seeds)[:1]
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("gradient_flow needs at least one seed")
    if params is not None:
        input_size = params["cell"]["kernel"].shape[0]
        hidden = params["cell"]["recurrent_kernel"].shape[0]
    num_classes = input_size - 1
    if params is not None and params["readout"]["bias"].shape != (num_classes,):
        raise ValueError(
            f"params read {input_size} input features, so the memory task has {num_classes} "
            f"classes, but the readout has shape {params['readout']['bias'].shape}"
        )

    def last_loss_sum(xs_BTE, params, labels_B):
        logits_BC = last_logits(cell_name, params, xs_BTE, _full_lengths(batch, time))
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits_BC, labels_B))

    # Each sequence's loss depends on its own inputs only, so the gradient of the sum is
    # every sequence's gradient at once.
    input_grad = jax.jit(jax.grad(last_loss_sum))
    norms = []
    for seed in seeds:
        k_init, k_data = jax.random.split(jax.random.PRNGKey(seed))
        probe = (
            params
            if params is not None
            else init_tagger(k_init, cell_name, input_size, hidden, num_classes)
        )
        xs_BTE, labels_B = memory_batch(k_data, batch, time, num_classes=num_classes)
        grads_BTE = input_grad(xs_BTE, probe, labels_B)
        norms.append(jnp.mean(jnp.linalg.norm(grads_BTE, axis=-1), axis=0))
    norms_T = np.mean(np.asarray(jnp.stack(norms), dtype=np.float64), axis=0)
    return norms_T[::-1].copy()


def run_gradient_flow(
    out_dir: str | Path | None,
    *,
    time: int = 100,
    steps: int = 500,
    seeds: Sequence[int] = (0, 1, 2),
    hidden: int = 32,
    batch: int = 64,
    lr: float = 1e-2,
    cells: Sequence[str] = tuple(CELLS),
    quick: bool = False,
) -> dict:
    """Gradient flow of every cell at initialisation and after training on the memory task.

    For each cell and seed: `gradient_flow` of the fresh model, then of the model after
    `train_memory_task(cell, time, steps=steps, seed=seed, ...)`; norms are averaged over
    seeds. Writes `gradient_flow.png` (log-scale norms against distance, one colour per
    cell, dashed at initialisation, solid after training) and `gradient_flow.json` into
    `out_dir` unless it is None.

    Returns:
      `{"settings": {...}, "distance": [0..T-1], "cells": {name: {"init": [T floats],
      "trained": [T floats], "accuracy": mean trained accuracy}}, "seconds": wall time}`.
    """
    if quick:
        time, steps, seeds = min(time, QUICK_TIME), min(steps, QUICK_STEPS), QUICK_SEEDS
        hidden, batch = min(hidden, QUICK_HIDDEN), min(batch, QUICK_BATCH)
    seeds = tuple(seeds)
    for cell in cells:
        get_cell(cell)
    start = _time.perf_counter()
    results: dict[str, Any] = {
        "settings": {
            "time": time,
            "steps": steps,
            "seeds": list(seeds),
            "hidden": hidden,
            "batch": batch,
            "lr": lr,
            "quick": quick,
        },
        "distance": list(range(time)),
        "cells": {},
    }
    for cell in cells:
        init = gradient_flow(cell, time=time, hidden=hidden, seeds=seeds)
        trained, accuracies = [], []
        for seed in seeds:
            run = train_memory_task(
                cell, time, steps=steps, batch=batch, hidden=hidden, seed=seed, lr=lr
            )
            trained.append(gradient_flow(cell, time=time, seeds=(seed,), params=run.params))
            accuracies.append(run.accuracy)
        results["cells"][cell] = {
            "init": init.tolist(),
            "trained": np.mean(trained, axis=0).tolist(),
            "accuracy": float(np.mean(accuracies)),
        }
    results["seconds"] = round(_time.perf_counter() - start, 2)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gradient_flow.json").write_text(json.dumps(results, indent=2) + "\n")
        plot_gradient_flow(results, out_dir / "gradient_flow.png")
    return results


def format_gradient_flow(results: dict, distances: Sequence[int] = (0, 1, 10, 50, 99)) -> str:
    """`run_gradient_flow`'s norms at a few distances as a Markdown table."""
    time = len(results["distance"])
    shown = [d for d in distances if d < time] or [0]
    lines = [
        "| cell | when | " + " | ".join(f"d={d}" for d in shown) + " |",
        "|---|---|" + "---:|" * len(shown),
    ]
    for cell, curves in results["cells"].items():
        for when in ("init", "trained"):
            norms = " | ".join(f"{curves[when][d]:.2e}" for d in shown)
            label = when if when == "init" else f"trained (acc {curves['accuracy']:.2f})"
            lines.append(f"| {cell} | {label} | {norms} |")
    return "\n".join(lines)


def plot_gradient_flow(results: dict, path: str | Path) -> Path:
    """Write `run_gradient_flow`'s results as a PNG: norm (log scale) against distance."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    distance = np.asarray(results["distance"])
    colors = ["C0", "C1", "C2", "C3", "C4", "C5"]
    floor = PLOT_FLOOR  # exact zeros (underflow) cannot be drawn on a log axis
    for color, (cell, curves) in zip(colors * 4, results["cells"].items(), strict=False):
        ax.plot(
            distance,
            np.maximum(curves["init"], floor),
            "--",
            color=color,
            label=f"{cell} (init)",
        )
        ax.plot(
            distance,
            np.maximum(curves["trained"], floor),
            "-",
            color=color,
            label=f"{cell} (trained, acc {curves['accuracy']:.2f})",
        )
    ax.set_ylim(bottom=floor / 2)
    settings = results["settings"]
    ax.set_yscale("log")
    ax.set_xlabel("distance T - t from the last step")
    ax.set_ylabel(f"mean ||d loss_T / d x_t||  (0 drawn at {floor:.0e})")
    ax.set_title(
        f"Gradient flow, memory task T={settings['time']} "
        f"({settings['steps']} training steps, {len(settings['seeds'])} seeds)"
    )
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


# ----------------------------------------------------------------------------------
# The memory-task table.
# ----------------------------------------------------------------------------------
def run_memory_table(
    out_dir: str | Path | None,
    *,
    times: Sequence[int] = (10, 50, 100, 200),
    cells: Sequence[str] = tuple(CELLS),
    steps: int = 500,
    batch: int = 64,
    hidden: int = 32,
    seed: int = 0,
    lr: float = 1e-2,
    quick: bool = False,
) -> dict:
    """Memory-task accuracy of every cell at every length; `memory_task.json` in `out_dir`.

    Returns `{"settings": {...}, "chance": 1 / MEMORY_CLASSES, "accuracy": {cell:
    {str(time): accuracy}}, "seconds": {cell: {str(time): wall seconds}}}`.
    """
    if quick:
        times, steps = QUICK_TIMES, min(steps, QUICK_STEPS)
        hidden, batch = min(hidden, QUICK_HIDDEN), min(batch, QUICK_BATCH)
    for cell in cells:
        get_cell(cell)
    results: dict[str, Any] = {
        "settings": {
            "times": list(times),
            "steps": steps,
            "batch": batch,
            "hidden": hidden,
            "seed": seed,
            "lr": lr,
            "quick": quick,
        },
        "chance": 1.0 / MEMORY_CLASSES,
        "accuracy": {},
        "seconds": {},
    }
    for cell in cells:
        results["accuracy"][cell], results["seconds"][cell] = {}, {}
        for time in times:
            start = _time.perf_counter()
            accuracy = memory_task(
                cell, time, steps=steps, batch=batch, hidden=hidden, seed=seed, lr=lr
            )
            results["accuracy"][cell][str(time)] = accuracy
            results["seconds"][cell][str(time)] = round(_time.perf_counter() - start, 2)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "memory_task.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def format_memory_table(results: dict) -> str:
    """`run_memory_table`'s accuracies as a Markdown table (cells by rows, lengths by columns)."""
    times = results["settings"]["times"]
    lines = [
        "| cell | " + " | ".join(f"T={t}" for t in times) + " |",
        "|---|" + "---:|" * len(times),
    ]
    for cell, row in results["accuracy"].items():
        lines.append(f"| {cell} | " + " | ".join(f"{row[str(t)]:.2f}" for t in times) + " |")
    lines.append("")
    lines.append(f"chance = {results['chance']:.2f}")
    return "\n".join(lines)
