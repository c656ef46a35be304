"""The one place that runs a cell over time: masking, direction, bidirectional, stacking.

Every recurrent layer in the package goes through `rnn` or `bidirectional` here, which
hand the work to `_scan`; faster paths (a fused LSTM with a hand-written backward pass)
plug in behind the same functions, so models never change when the engine does.

Engines: `"fused"` (the default, `lstm_jax.fused`) runs the "lstm" cell from a zero carry
through a hand-written backward pass, both directions of a bidirectional layer in one scan,
its two loops as native code on a CPU backend for the float32 layers that code takes
(`lstm_jax.cpu_kernel`: a hidden size that is a multiple of 16, and weights within 1 MiB or
a batch of 4 sequences a core); `"scan"` runs every cell through the generic masked
`lax.scan` (the reference); `"remat"` is that scan with each step rematerialised
(`jax.checkpoint`): the backward pass recomputes the gates from the stored carries, so
activation memory drops to the carries, for long sequences; `"pallas"` is the fused engine
with its two loops as Pallas GPU kernels (`lstm_jax.pallas_lstm`: the recurrent weights held
on chip across the steps) on a GPU backend, and the fused engine elsewhere, or for a layer
the kernels do not take (a hidden size that is not a power of two from 16 up). Other cells,
or an explicit `initial_carry`, take the generic scan. The engine is an argument of every
call (models and configs carry it as a field), never module state, so what `jit` traces is
what the call says. The fused engines also take `matmul_dtype="bfloat16"`: bfloat16 inputs
to their matmuls, with float32 accumulation, gates, cell state and final carries (the output
sequence comes back rounded to bfloat16; `lstm_jax.fused`).

Conventions of the public functions:
- inputs are batch-major, `<float>[batch, time, features]`, lengths `<int32>[batch]`;
- step t of sequence b is real when `t < lengths[b]`; padding is on the right;
- a padded step leaves the carry untouched and emits zeros, so the final carry is the
  carry after each sequence's last real step (the initial carry for a zero length);
- the backward direction runs from each sequence's last real step to its first, so
  padding never comes first and its final carry is the carry after step 0;
- lengths are checked when they are concrete (outside `jit`); inside `jit` a length
  above `time` acts as `time` and one below 0 as 0. The parameters' shapes are checked
  against the cell's `init` for the inputs' features, inside `jit` too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import fused
from lstm_jax.cells import CellSpec, get_cell, lstm_cell

Array = jax.Array

ENGINES = ("fused", "pallas", "scan", "remat")
FUSED_ENGINES = ("fused", "pallas")
DEFAULT_ENGINE = "fused"


def check_engine(engine: str) -> str:
    """`engine` if it is one of `ENGINES`; a clear error otherwise."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")
    return engine


MATMUL_DTYPES = ("float32", "bfloat16")


def check_matmul_dtype(matmul_dtype: str | None) -> str | None:
    """`matmul_dtype` if it is None or one of `MATMUL_DTYPES`; a clear error otherwise."""
    if matmul_dtype is not None and matmul_dtype not in MATMUL_DTYPES:
        raise ValueError(
            f"unknown matmul_dtype {matmul_dtype!r}; choose one of {list(MATMUL_DTYPES)}"
        )
    return matmul_dtype


def fused_only(matmul_dtype: str | None) -> bool:
    """Whether `matmul_dtype` exists only on the fused engines (anything but float32)."""
    return check_matmul_dtype(matmul_dtype) not in (None, "float32")


def fused_runs(cell: str | CellSpec, engine: str) -> bool:
    """Whether a fused engine runs layers of `cell` (a name or spec) on `engine`, when they
    start from a zero carry: the LSTM cell on `FUSED_ENGINES`."""
    spec = get_cell(cell) if isinstance(cell, str) else cell
    return check_engine(engine) in FUSED_ENGINES and spec.step is lstm_cell


def _use_fused(
    spec: CellSpec,
    engine: str,
    initial_carry: Any = None,
    matmul_dtype: str | None = None,
) -> bool:
    """Whether the fused LSTM runs this layer: the LSTM cell, from a zero carry, on a
    fused engine (`FUSED_ENGINES`).

    A `matmul_dtype` other than float32 exists only there, so asking for it elsewhere
    is an error rather than a silent float32 run.
    """
    fused_ok = fused_runs(spec, engine) and initial_carry is None
    if fused_only(matmul_dtype) and not fused_ok:
        raise ValueError(
            f"matmul_dtype={matmul_dtype!r} needs a fused engine: the 'lstm' cell from a "
            f"zero carry with engine 'fused' or 'pallas' (got cell {spec.name!r}, engine "
            f"{check_engine(engine)!r}, initial_carry given: {initial_carry is not None}); "
            "use matmul_dtype=None for the others"
        )
    return fused_ok


def _kernel(
    engine: str, features: int, hidden: int, batch: int, dtype: Any, matmul_dtype: Any = None
) -> str:
    """What runs the loops of a fused layer (`features` inputs, `hidden` units, `batch`
    sequences, `dtype` inputs, matmuls on `matmul_dtype`; `fused.KERNELS`): the Pallas
    kernels for engine "pallas" on a GPU where they take the layer and this jax still has
    Pallas' Triton backend; the native loops of `cpu_kernel` on a CPU where they take it;
    the `lax` loops otherwise."""
    if check_engine(engine) == "pallas":
        from lstm_jax import pallas_lstm

        if pallas_lstm.on_gpu():
            kernels = pallas_lstm.triton_supported()
            fits = pallas_lstm.supported(hidden, dtype, matmul_dtype)
            return "pallas" if kernels and fits else "loop"
    from lstm_jax import cpu_kernel

    return "cpu" if cpu_kernel.takes(features, hidden, batch, dtype, matmul_dtype) else "loop"


def time_major(x: Array) -> Array:
    """Swap the batch and time axes (`[B, T, ...] <-> [T, B, ...]`): the scan runs on axis 0."""
    return jnp.swapaxes(x, 0, 1)


def step_mask(lengths_B: Array, time: int) -> Array:
    """`<bool>[time, batch]`: True where step t of sequence b is real (`t < lengths[b]`)."""
    return jnp.arange(time)[:, None] < lengths_B[None, :]


def check_inputs(xs_BTE: Any, lengths_B: Any) -> None:
    """Raise a `ValueError` that says what is wrong with a layer's inputs.

    Shapes are always checked; the values of `lengths` only when they are concrete.
    """
    xs_shape, len_shape = np.shape(xs_BTE), np.shape(lengths_B)
    if len(xs_shape) != 3:
        raise ValueError(
            f"inputs must be [batch, time, features], got shape {xs_shape}; "
            "add a batch axis for a single sequence"
        )
    if len(len_shape) != 1 or len_shape[0] != xs_shape[0]:
        raise ValueError(
            f"lengths must be [batch] = [{xs_shape[0]}] to match inputs {xs_shape}, "
            f"got shape {len_shape}"
        )
    if not jnp.issubdtype(jnp.result_type(lengths_B), jnp.integer):
        raise ValueError(f"lengths must be integers, got dtype {jnp.result_type(lengths_B)}")
    if isinstance(lengths_B, jax.core.Tracer):
        return
    lengths = np.asarray(lengths_B)
    if lengths.size and (lengths.min() < 0 or lengths.max() > xs_shape[1]):
        raise ValueError(
            f"lengths must lie in [0, time={xs_shape[1]}], got min {lengths.min()} and max "
            f"{lengths.max()}; pad the inputs to the longest sequence or truncate the lengths"
        )


def check_params(cell: str | CellSpec, params: Any, features: int) -> None:
    """Raise a `ValueError` that names the shapes when `params` are not `cell`'s
    parameters (its `init`'s) for inputs of `features` features.

    The hidden size is read from `recurrent_kernel` (every cell of `CELLS` has one; a
    cell without it is not checked). Only shapes are compared, so it runs under `jit`.
    """
    spec = _as_spec(cell)
    got = _shapes(params)
    if "recurrent_kernel" not in got:
        return
    hidden = got["recurrent_kernel"][0]
    expected = _init_shapes(spec, features, hidden)
    if got != expected:
        raise ValueError(
            f"params do not fit the {spec.name!r} cell on inputs of {features} features "
            f"(hidden size {hidden}, from recurrent_kernel): expected {expected}, got "
            f"{got}; make them with the cell's init(key, input_size={features}, "
            f"hidden_size={hidden})"
        )


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """`{"path/to/leaf": shape}` of a pytree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): np.shape(leaf)
        for path, leaf in leaves
    }


@functools.cache
def _init_shapes(spec: CellSpec, features: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return _shapes(jax.eval_shape(lambda key: spec.init(key, features, hidden), jax.random.key(0)))


def _as_spec(cell: str | CellSpec) -> CellSpec:
    return get_cell(cell) if isinstance(cell, str) else cell


def _masked(mask_B: Array, new: Any, old: Any) -> Any:
    """Keep `new` where the step is real and `old` on padding, leaf by leaf."""
    return jax.tree.map(lambda n, o: jnp.where(mask_B[:, None], n, o), new, old)


def _scan(
    step,
    params,
    carry,
    xs_TBE: Array,
    mask_TB: Array,
    *,
    reverse: bool,
    unroll: int,
    remat: bool = False,
):
    """Run `step` over time with padding masked: the generic engine for every cell.
    With `remat`, autodiff keeps only each step's inputs and carry and recomputes the rest."""

    def body(carry, inputs):
        x_BE, m_B = inputs
        new_carry, y_BH = step(params, carry, x_BE)
        return _masked(m_B, new_carry, carry), jnp.where(m_B[:, None], y_BH, 0.0)

    body = jax.checkpoint(body) if remat else body
    return jax.lax.scan(body, carry, (xs_TBE, mask_TB), reverse=reverse, unroll=unroll)


def rnn(
    cell: str | CellSpec,
    params: dict,
    xs_BTE: Array,
    lengths_B: Array,
    *,
    reverse: bool = False,
    initial_carry: Any = None,
    unroll: int = 1,
    engine: str = DEFAULT_ENGINE,
    matmul_dtype: str | None = None,
) -> tuple[Array, Any]:
    """Run one direction of a recurrent layer over a right-padded batch.

    Args:
      cell: a cell name from `lstm_jax.cells.CELLS` or a `CellSpec`.
      params: the cell's parameters (`init_*` of that cell).
      xs_BTE: `<float>[batch, time, features]` inputs.
      lengths_B: `<int32>[batch]` number of real steps of each sequence.
      reverse: run from each sequence's last real step back to its first.
      initial_carry: the carry to start from; zeros when None.
      unroll: `lax.scan`'s unroll factor.
      engine: one of `ENGINES` (see the module docstring).
      matmul_dtype: None or "float32", or "bfloat16" for bfloat16 matmul inputs (the
        fused engines only).

    Returns:
      `(ys <float>[batch, time, H], final_carry)`; `ys` is zero on padded steps.
    """
    spec = _as_spec(cell)
    check_inputs(xs_BTE, lengths_B)
    batch, time, features = xs_BTE.shape
    check_params(spec, params, features)
    if _use_fused(spec, engine, initial_carry, matmul_dtype):
        ys_TBH, carry = fused.lstm_layer_tm(
            params,
            time_major(xs_BTE),
            step_mask(lengths_B, time),
            reverse=reverse,
            unroll=unroll,
            matmul_dtype=matmul_dtype,
            kernel=_kernel(
                engine,
                features,
                params["recurrent_kernel"].shape[0],
                batch,
                xs_BTE.dtype,
                matmul_dtype,
            ),
        )
        return time_major(ys_TBH), carry
    if initial_carry is None:
        hidden = params["recurrent_kernel"].shape[0]
        initial_carry = spec.zero_carry(batch, hidden, xs_BTE.dtype)
    carry, ys_TBH = _scan(
        spec.step,
        params,
        initial_carry,
        time_major(xs_BTE),
        step_mask(lengths_B, time),
        reverse=reverse,
        unroll=unroll,
        remat=check_engine(engine) == "remat",
    )
    return time_major(ys_TBH), carry


def bidirectional(
    cell: str | CellSpec,
    params: dict,
    xs_BTE: Array,
    lengths_B: Array,
    *,
    unroll: int = 1,
    engine: str = DEFAULT_ENGINE,
    matmul_dtype: str | None = None,
) -> tuple[Array, tuple[Any, Any]]:
    """A bidirectional layer: `params = {"forward": ..., "backward": ...}`.

    Returns `(ys <float>[batch, time, 2H], (forward_carry, backward_carry))`, the two
    directions' outputs concatenated at each real step (zeros on padding). The forward
    carry is the state after each sequence's last real step, the backward carry the
    state after its first step, as Keras' `Bidirectional` with `mask_zero=True`.
    `engine` and `matmul_dtype` as in `rnn`.
    """
    spec = _as_spec(cell)
    if _use_fused(spec, engine, matmul_dtype=matmul_dtype):
        check_inputs(xs_BTE, lengths_B)
        for direction in ("forward", "backward"):
            check_params(spec, params[direction], xs_BTE.shape[-1])
        shapes = {direction: _shapes(params[direction]) for direction in ("forward", "backward")}
        if shapes["forward"] != shapes["backward"]:
            raise ValueError(
                f"the fused engines run both directions with one hidden size, got {shapes}; "
                'give both the same size, or use engine="scan"'
            )
        ys_fwd, ys_bwd, carries = fused.lstm_bidirectional_tm(
            params["forward"],
            params["backward"],
            time_major(xs_BTE),
            step_mask(lengths_B, xs_BTE.shape[1]),
            unroll=unroll,
            matmul_dtype=matmul_dtype,
            kernel=_kernel(
                engine,
                xs_BTE.shape[-1],
                params["forward"]["recurrent_kernel"].shape[0],
                xs_BTE.shape[0],
                xs_BTE.dtype,
                matmul_dtype,
            ),
        )
        return time_major(jnp.concatenate([ys_fwd, ys_bwd], axis=-1)), carries
    kwargs = dict(unroll=unroll, engine=engine)
    ys_fwd, carry_fwd = rnn(spec, params["forward"], xs_BTE, lengths_B, **kwargs)
    ys_bwd, carry_bwd = rnn(spec, params["backward"], xs_BTE, lengths_B, reverse=True, **kwargs)
    return jnp.concatenate([ys_fwd, ys_bwd], axis=-1), (carry_fwd, carry_bwd)


def feedback(
    cell: str | CellSpec,
    params: dict,
    carry: Any,
    x0_BE: Array,
    steps: int,
    emit: Any,
) -> tuple[Any, Any]:
    """Run `cell` for `steps` steps from `carry`, each step's input made from the step
    before's output: autoregressive decoding (the forecaster's decoder).

    `emit(y_BH, t) -> (out, x_next_BE)` turns step t's output into what the step reports
    (a pytree) and the next step's input (`x0_BE <float>[batch, features]` is the first).
    Returns `(final_carry, outs)`, each leaf of `outs` batch-major: `[batch, steps, ...]`.
    One `lax.scan`: no Python loop per step, and autodiff through it is BPTT.
    """
    spec = _as_spec(cell)

    def body(state, t):
        carry, x = state
        carry, y = spec.step(params, carry, x)
        out, x = emit(y, t)
        return (carry, x), out

    (carry, _), outs = jax.lax.scan(body, (carry, x0_BE), jnp.arange(steps))
    return carry, jax.tree.map(time_major, outs)


def final_output(carry: Any) -> Array:
    """The output half of a final carry: `h` of an `(h, c)` carry, the carry itself otherwise."""
    return carry[0] if isinstance(carry, tuple) else carry


def stack(
    cell: str | CellSpec,
    layers: Sequence[dict],
    xs_BTE: Array,
    lengths_B: Array,
    *,
    is_bidirectional: bool = True,
    return_sequences: bool = False,
    return_state: bool = False,
    engine: str = DEFAULT_ENGINE,
    matmul_dtype: str | None = None,
) -> Array | tuple[Array, Array]:
    """Stacked recurrent layers with Keras' `return_sequences` semantics.

    Every layer but the last returns its full sequence to the next; the last returns its
    sequence when `return_sequences`, otherwise its final output (`<float>[batch, D*H]`,
    D = 2 when bidirectional: forward at the last real step, backward at the first).
    `return_state` adds that final output as a second result, beside the sequence (as a
    head that reads both needs). `engine` and `matmul_dtype` as in `rnn`.
    """
    if not layers:
        raise ValueError("stack needs at least one layer's parameters")
    ys, carry = xs_BTE, None
    options = dict(engine=engine, matmul_dtype=matmul_dtype)
    for params in layers:
        if is_bidirectional:
            ys, carry = bidirectional(cell, params, ys, lengths_B, **options)
        else:
            ys, carry = rnn(cell, params, ys, lengths_B, **options)
    if is_bidirectional:
        final = jnp.concatenate([final_output(carry[0]), final_output(carry[1])], axis=-1)
    else:
        final = final_output(carry)
    out = ys if return_sequences else final
    return (out, final) if return_state else out
