"""The fused LSTM recurrence as Pallas GPU kernels (Triton): the "pallas" engine's core.

`lstm_core` computes what `fused._fused` computes, for D directions stacked on a leading
axis, each in its own scan order, with the same padding rules and the same equations (the
`lstm_jax.fused` docstring has them), but runs each loop over time as one GPU kernel:

- the input projection `x_t W + b` of every step is one large matmul before the loop, as
  are the weight and input gradients after the backward one (XLA runs those);
- the forward kernel runs one program per (direction, block of `BLOCK_B` sequences). It
  loads the recurrent kernel `U` once and keeps it on chip for all T steps (the idea of
  persistent RNN kernels), carries `(h, c)` in registers, and per step does the four
  gates' `h U_k`, the activations and the masked update, and writes `y_t`, the gates,
  `c_{t-1}` and `h_{t-1}` for the backward pass;
- the backward kernel, per program likewise, keeps `U` on chip, carries `(dh, dc)` from the
  last step to the first, and writes `dz_t`; then `dW = sum_t x_t^T dz_t`,
  `dU = sum_t h_{t-1}^T dz_t`, `db = sum_t dz_t` and `dx_t = dz_t W^T` run as matmuls.

Every float32 matmul, in the kernels and around them, asks for full float32 precision
(`HIGHEST`; a GPU would otherwise round their inputs to TF32), so the results match the
`fused` loop's to float32 rounding; with `operands=bfloat16` the matmuls take bfloat16
inputs and accumulate in float32, and the outputs come back rounded to bfloat16, as there.

Shapes the kernels need: H a power of two, at least 16 (the gates' matmuls are Triton
`dot`s; the tutorial's models have 64 and 32), at most 64 with float32 matmuls and 128
with bfloat16 ones (`MAX_HIDDEN`: shared memory on an H200); the batch is padded to a
multiple of `BLOCK_B` (padded rows are masked out); any time length. `recurrence` takes
these kernels only for `engine="pallas"` on a GPU backend; elsewhere that engine is the
`fused` loop. Triton, because it runs on Ampere and newer GPUs and lowers completely in the
jax versions this package supports; JAX deprecates Pallas' Triton backend from jax 0.11
(it still compiles them there, with a warning), so from that version on the engine runs
the fused loop (`triton_supported`) until the kernels are ported; `docs/engines.md` has
what they gave on an H200 and the Mosaic GPU route.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

Array = jax.Array
Params = dict[str, Array]

BLOCK_B = 16  # sequences per program: the smallest M of a Triton dot
TRITON_LAST_JAX = (0, 10)  # the last jax minor before Pallas' Triton backend's deprecation
GATES = 4  # i, f, g, o, in this order along the kernels' 4H axis


def _compiler(hidden: int) -> Any:
    """Triton's launch settings for a layer of `hidden` units, chosen before any GPU ran
    them (untuned): the warps such that `U` (4 H^2 floats, held for the whole loop) takes
    about 64 of each thread's registers, 8 warps at H = 64; no software pipelining of the
    time loop."""
    warps = min(16, max(4, 4 * hidden * hidden // (32 * 64)))
    from jax.experimental.pallas import triton as pltriton  # imported where it is used

    return pltriton.CompilerParams(num_warps=warps, num_stages=1)


# The largest hidden size per matmul input dtype, as compiled on an NVIDIA H200 (jax 0.11.2):
# at 128 units with float32 matmuls the kernels ask for 264 KiB of shared memory, over its
# 227 KiB; with bfloat16 ones they compile and run. Larger sizes are untried.
MAX_HIDDEN = {jnp.dtype(jnp.float32): 64, jnp.dtype(jnp.bfloat16): 128}


def supported(hidden: int, dtype: Any = jnp.float32, operands: Any = None) -> bool:
    """Whether the kernels take a layer of `hidden` units on inputs of `dtype` (float32)
    with matmul inputs of `operands` (default `dtype`): a power of two from 16 up to
    `MAX_HIDDEN[operands]`."""
    limit = MAX_HIDDEN.get(jnp.dtype(dtype if operands is None else operands), 0)
    power_of_two = hidden >= 16 and hidden & (hidden - 1) == 0
    return power_of_two and hidden <= limit and jnp.dtype(dtype) == jnp.float32


def triton_supported(version: str | None = None) -> bool:
    """Whether this jax (or `version`) still has Pallas' Triton backend undeprecated (up to
    `TRITON_LAST_JAX`): where not, engine "pallas" runs the fused loop instead."""
    release = (version or jax.__version__).split(".")[:2]
    return tuple(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in release) <= (
        TRITON_LAST_JAX
    )


def on_gpu() -> bool:
    """Whether JAX's default backend is a GPU, where the kernels compile."""
    return jax.default_backend() == "gpu"


def _precision(operands: Any) -> Any:
    return jax.lax.Precision.HIGHEST if jnp.dtype(operands) == jnp.float32 else None


def _dot(a: Array, b: Array, operands: Any, *, b_transposed: bool = False) -> Array:
    """`a @ b` (`a @ b.T` when `b_transposed`) inside a kernel, on `operands` inputs,
    accumulated in float32."""
    contract = (((1,), (1,)) if b_transposed else ((1,), (0,)), ((), ()))
    return jax.lax.dot_general(
        a.astype(operands),
        b.astype(operands),
        contract,
        precision=_precision(operands),
        preferred_element_type=jnp.float32,
    )


def _gate_blocks(a: Array) -> Array:
    """`[..., 4H] -> [..., 4, H]` moved so the gate axis comes before the batch axis:
    `<[D, T, B, 4H]> -> <[D, T, 4, B, H]>`, the layout the kernels read a gate's tile from."""
    *lead, batch, width = a.shape
    return jnp.moveaxis(a.reshape(*lead, batch, GATES, width // GATES), -2, -3)


def _from_gate_blocks(a: Array) -> Array:
    """The inverse of `_gate_blocks`: `<[D, T, 4, B, H]> -> <[D, T, B, 4H]>`."""
    *lead, gates, batch, hidden = a.shape
    return jnp.moveaxis(a, -3, -2).reshape(*lead, batch, gates * hidden)


def _activate(k: int, z: Array) -> Array:
    """Gate k's activation: tanh for the candidate g, a sigmoid written as
    `1/2 + tanh(z/2)/2` for i, f and o (as `fused` computes it)."""
    return jnp.tanh(z) if k == 2 else 0.5 + 0.5 * jnp.tanh(0.5 * z)


# ----------------------------------------------------------------------------------
# The kernels. One program per (direction d, block of BLOCK_B sequences); each ref is that
# program's block: sequences `[T, ...]`, gate tiles `[T, 4, BLOCK_B, H]`.
# ----------------------------------------------------------------------------------
def _gate_tiles(u_ref) -> list[Array]:
    """The recurrent kernel `<[H, 4H]>` as its four gates' `<[H, H]>` tiles, loaded once:
    they stay on chip for all the steps of the loop."""
    hidden = u_ref.shape[0]
    return [u_ref[:, pl.ds(k * hidden, hidden)] for k in range(GATES)]


def _forward_kernel(
    xp_ref,
    u_ref,
    m_ref,
    y_ref,
    gates_ref,
    c_prev_ref,
    h_prev_ref,
    h_last_ref,
    c_last_ref,
    *,
    operands,
):
    time = xp_ref.shape[0]
    u = _gate_tiles(u_ref)

    def step(t, carry):
        h, c = carry
        i, f, g, o = (_activate(k, xp_ref[t, k] + _dot(h, u[k], operands)) for k in range(GATES))
        real = m_ref[t][:, None] > 0
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        for k, gate in enumerate((i, f, g, o)):
            gates_ref[t, k] = gate
        c_prev_ref[t] = c
        h_prev_ref[t] = h
        y_ref[t] = jnp.where(real, h_new.astype(operands).astype(jnp.float32), 0.0)  # as `fused`
        return jnp.where(real, h_new, h), jnp.where(real, c_new, c)

    zeros = jnp.zeros(h_last_ref.shape, jnp.float32)
    h, c = jax.lax.fori_loop(0, time, step, (zeros, zeros))
    h_last_ref[...] = h
    c_last_ref[...] = c


def _backward_kernel(
    gates_ref,
    c_prev_ref,
    m_ref,
    dy_ref,
    u_ref,
    dh_last_ref,
    dc_last_ref,
    dz_ref,
    *,
    operands,
):
    time = gates_ref.shape[0]
    u = _gate_tiles(u_ref)

    def step(k, carry):
        t = time - 1 - k
        dh, dc = carry
        i, f, g, o = (gates_ref[t, q] for q in range(GATES))
        c_prev = c_prev_ref[t]
        real = m_ref[t][:, None] > 0
        tc = jnp.tanh(f * c_prev + i * g)
        dht = jnp.where(real, dh + dy_ref[t], 0.0)
        dct = jnp.where(real, dc, 0.0) + dht * o * (1.0 - tc * tc)
        dz = (
            dct * g * i * (1.0 - i),
            dct * c_prev * f * (1.0 - f),
            dct * i * (1.0 - g * g),
            dht * tc * o * (1.0 - o),
        )
        dh_prev = jnp.where(real, 0.0, dh)
        for q in range(GATES):
            dz_q = dz[q].astype(operands).astype(jnp.float32)
            dz_ref[t, q] = dz_q
            dh_prev = dh_prev + _dot(dz_q, u[q], operands, b_transposed=True)
        return dh_prev, dct * f + jnp.where(real, 0.0, dc)

    jax.lax.fori_loop(0, time, step, (dh_last_ref[...], dc_last_ref[...]))


def _specs(directions: int, time: int, hidden: int):
    """BlockSpecs for the kernels' operands, on the grid (direction, batch block)."""
    seq = pl.BlockSpec((None, time, BLOCK_B, hidden), lambda d, b: (d, 0, b, 0))
    tiles = pl.BlockSpec((None, time, GATES, BLOCK_B, hidden), lambda d, b: (d, 0, 0, b, 0))
    mask = pl.BlockSpec((None, time, BLOCK_B), lambda d, b: (d, 0, b))
    weights = pl.BlockSpec((None, hidden, GATES * hidden), lambda d, b: (d, 0, 0))
    carry = pl.BlockSpec((None, BLOCK_B, hidden), lambda d, b: (d, b, 0))
    return seq, tiles, mask, weights, carry


def _call(kernel, grid, in_specs, out_specs, out_shape, hidden, interpret):
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=None if interpret else _compiler(hidden),
        interpret=interpret,
    )


def _run_forward(params, x_DTBE, m_DTB, operands, interpret):
    directions, time, batch, _ = x_DTBE.shape
    hidden = params["recurrent_kernel"].shape[1]
    xp = (
        jnp.einsum(
            "dtbe,deg->dtbg",
            x_DTBE.astype(operands),
            params["kernel"].astype(operands),
            precision=_precision(operands),
            preferred_element_type=jnp.float32,
        )
        + params["bias"][:, None, None]
    )
    seq, tiles, mask, weights, carry = _specs(directions, time, hidden)
    f32 = jnp.float32
    shape = functools.partial(jax.ShapeDtypeStruct, dtype=f32)
    y, gates, c_prev, h_prev, h_last, c_last = _call(
        functools.partial(_forward_kernel, operands=operands),
        (directions, batch // BLOCK_B),
        [tiles, weights, mask],
        [seq, tiles, seq, seq, carry, carry],
        [
            shape((directions, time, batch, hidden)),
            shape((directions, time, GATES, batch, hidden)),
            shape((directions, time, batch, hidden)),
            shape((directions, time, batch, hidden)),
            shape((directions, batch, hidden)),
            shape((directions, batch, hidden)),
        ],
        hidden,
        interpret,
    )(_gate_blocks(xp), params["recurrent_kernel"].astype(f32), m_DTB.astype(f32))
    return y, (h_last, c_last), (gates, c_prev, h_prev)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _core(params, x_DTBE, m_DTB, operands, interpret):
    y, carry, _ = _run_forward(params, x_DTBE, m_DTB, operands, interpret)
    return y, carry


def _core_fwd(params, x_DTBE, m_DTB, operands, interpret):
    y, carry, residuals = _run_forward(params, x_DTBE, m_DTB, operands, interpret)
    return (y, carry), (params, x_DTBE, m_DTB, residuals)


def _core_bwd(operands, interpret, saved, cotangents):
    params, x_DTBE, m_DTB, (gates, c_prev, h_prev) = saved
    dy, (dh_last, dc_last) = cotangents
    directions, time, batch, _ = x_DTBE.shape
    hidden = params["recurrent_kernel"].shape[1]
    seq, tiles, mask, weights, carry = _specs(directions, time, hidden)
    dz_tiles = _call(
        functools.partial(_backward_kernel, operands=operands),
        (directions, batch // BLOCK_B),
        [tiles, seq, mask, seq, weights, carry, carry],
        tiles,
        jax.ShapeDtypeStruct(gates.shape, jnp.float32),
        hidden,
        interpret,
    )(gates, c_prev, m_DTB.astype(jnp.float32), dy, params["recurrent_kernel"], dh_last, dc_last)
    dz = _from_gate_blocks(dz_tiles).astype(operands)
    big = functools.partial(
        jnp.einsum, precision=_precision(operands), preferred_element_type=jnp.float32
    )
    dparams = {
        "kernel": big("dtbe,dtbg->deg", x_DTBE.astype(operands), dz),
        "recurrent_kernel": big("dtbh,dtbg->dhg", h_prev.astype(operands), dz),
        "bias": jnp.sum(dz.astype(jnp.float32), axis=(1, 2)),
    }
    dx = big("dtbg,deg->dtbe", dz, params["kernel"].astype(operands))
    dparams = {k: v.astype(params[k].dtype) for k, v in dparams.items()}
    return dparams, dx.astype(x_DTBE.dtype), None


_core.defvjp(_core_fwd, _core_bwd)


def lstm_core(
    params: Params, x_DTBE: Array, m_DTB: Array, operands: Any, *, interpret: bool = False
) -> tuple[Array, tuple[Array, Array]]:
    """`fused._fused`'s contract on the kernels: D directions stacked on axis 0.

    Args:
      params: `{"kernel" <[D, E, 4H]>, "recurrent_kernel" <[D, H, 4H]>, "bias" <[D, 4H]>}`.
      x_DTBE: `<float32>[D, time, batch, E]` inputs, each direction in its scan order.
      m_DTB: `<bool>[D, time, batch]` masks, True on real steps.
      operands: the matmuls' input dtype (float32, or bfloat16 with float32 accumulation).
      interpret: run the kernels in Pallas' interpret mode (any backend, slow).

    Returns:
      `(ys <float32>[D, time, batch, H], (h, c) <float32>[D, batch, H])`.
    """
    hidden = params["recurrent_kernel"].shape[1]
    if not supported(hidden, x_DTBE.dtype, operands):
        limits = ", ".join(f"{limit} ({dtype.name})" for dtype, limit in MAX_HIDDEN.items())
        raise ValueError(
            f"the pallas kernels need float32 inputs and a hidden size that is a power of "
            f"two from 16 up to {limits} matmuls; got {x_DTBE.dtype} inputs, {hidden} "
            f"units, {jnp.dtype(operands).name} matmuls. Use engine='fused' for this layer "
            "(matmul_dtype='bfloat16' for bfloat16 matmuls)"
        )
    batch = x_DTBE.shape[2]
    padded = -batch % BLOCK_B
    if padded:  # extra sequences with no real step: they keep the zero carry, emit zeros
        x_DTBE = jnp.pad(x_DTBE, ((0, 0), (0, 0), (0, padded), (0, 0)))
        m_DTB = jnp.pad(m_DTB, ((0, 0), (0, 0), (0, padded)))
    ys, (h, c) = _core(params, x_DTBE, m_DTB, jnp.dtype(operands), interpret)
    return ys[:, :, :batch], (h[:, :batch], c[:, :batch])
