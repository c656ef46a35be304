"""A fused LSTM recurrence with a hand-written backward pass (the fast path of `recurrence`).

`lstm_layer_tm` (one direction) and `lstm_bidirectional_tm` (both directions in one loop)
compute what `recurrence.rnn` / `recurrence.bidirectional` compute for the "lstm" cell
from a zero carry, with the same padding rules, but differentiate through a
`jax.custom_vjp` instead of letting autodiff transpose the scan step by step. The two
loops below are `lax` loops, or, on a CPU backend, the same loops as native code
(`lstm_jax.cpu_kernel`, kernel "cpu"); the rest is shared.

Forward (per direction, scan order t = 0..T-1; the backward direction scans a time-reversed
copy of its inputs, so "scan order" is its own order), with mask m_t = [t < length]:

    z_t  = x_t W + h_{t-1} U + b                  W = kernel, U = recurrent_kernel
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
    c~_t = f c_{t-1} + i g,   h~_t = o tanh(c~_t)
    c_t  = m_t ? c~_t : c_{t-1},   h_t = m_t ? h~_t : h_{t-1},   y_t = m_t ? h~_t : 0

The forward scan stores the activated gates i, f, g, o (four arrays), the cell state
before each step, c_{t-1}, and [x_t, h_{t-1}, 1], the matmul's input with a 1 appended
(transposed, see below).

Backward, a reverse scan carrying (dh, dc) = (dL/dh_t, dL/dc_t), starting from the final
carry's cotangent, with dy_t the cotangent of y_t:

    dh~  = m_t (dh + dy_t)
    dc~  = m_t dc + dh~ o (1 - tanh^2 c~_t)
    dz_i = dc~ g i (1 - i),   dz_f = dc~ c_{t-1} f (1 - f)
    dz_g = dc~ i (1 - g^2),   dz_o = dh~ tanh(c~_t) o (1 - o)
    dc_{t-1} = dc~ f + (1 - m_t) dc
    dh_{t-1} = dz_t U^T + (1 - m_t) dh

(c~_t is recomputed from the stored gates and c_{t-1}.) The only matmul left inside the
loop is `dz_t U^T`; the parameter and input gradients are large matmuls after it:

    [dW; dU; db] = sum_t [x_t, h_{t-1}, 1]^T dz_t,   dx_t = dz_t W^T

Both directions of a bidirectional layer run in the same loop (the backward one over a
time-reversed copy of the inputs and mask: each sequence's padding comes first, where the
masked steps keep the zero carry, then its real steps from last to first), so the loop
runs T steps, not 2T.

Layout, for XLA on CPU (`docs/engines.md` has the measurements behind each choice):
- The directions are stacked on a leading axis, `[D, ...]`, and every step does one
  batched matmul and one set of fusions for all of them: XLA's CPU runtime pays a fixed
  cost per small op of a step, whatever its size, so fewer ops per step pay.
- The forward loop writes `[x_t, h_{t-1}, 1]` transposed, as column t of one
  `[D, E + H + 1, time, batch]` array, so the weight gradient's matmul takes it as it
  lies (no transpose, no generic dot), and its row of ones gives the bias gradient in
  the same matmul.
- A loop fusion that reads several slices of one stored array is compiled without
  vectorisation, so the gates are stored as four arrays, and the backward step reads
  each whole.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax import cpu_kernel

Array = jax.Array
Params = dict[str, Array]


def _flip(x_T: Array) -> Array:
    """Reverse the time axis (axis 0) of a time-major array."""
    return jnp.flip(x_T, axis=0)


# ----------------------------------------------------------------------------------
# The core: D directions stacked on a leading axis, each in its own scan order, as one
# custom-VJP function. Every array below is `[D, ...]`; sequences are `[D, time, ...]`.
# ----------------------------------------------------------------------------------
def _gate_slope(hidden: int, dtype: Any) -> Array:
    """`<float>[1, 1, 4H]`: 1/2 on the sigmoid gates (i, f, o), 1 on the tanh candidate g.

    With it every gate is one expression, `act = (1 - s) + s tanh(s z)`, since
    `sigmoid(z) = 1/2 + tanh(z/2) / 2`: the forward step activates all four gates in one
    full-width fusion on the matmul's output, with one tanh per element and no exp or
    division (in float32 as accurate as `jax.nn.sigmoid` in absolute terms, within 4e-7
    of float64 over [-20, 20]; near 0 a sigmoid gate loses relative precision).
    """
    ones = jnp.ones((hidden,), dtype)
    return jnp.concatenate([ones / 2, ones / 2, ones, ones / 2])[None, None]


def _bmm(a: Array, b: Array, operands: Any, out: Any, *, b_transposed: bool = False) -> Array:
    """`a[d] @ b[d]` (`a[d] @ b[d].T` when `b_transposed`) for every direction d, on
    `operands`-typed inputs, accumulated and returned in `out`: one batched matmul for
    all directions.

    Give a transposed right operand as it lies, with `b_transposed`, rather than through
    `jnp.swapaxes`: XLA on CPU ran `a @ swapaxes(b).astype(bfloat16)` as a float32
    matmul on inputs rounded to bfloat16 (two extra conversion passes and the float32
    rate), but the same product on `b` as it lies as a bfloat16 matmul.
    """
    spec = "dmk,dnk->dmn" if b_transposed else "dmk,dkn->dmn"
    return jnp.einsum(spec, a.astype(operands), b.astype(operands), preferred_element_type=out)


def _at(a_DT: Array, t: Array) -> Array:
    """Step t of every direction: `a[:, t]`."""
    return jax.lax.dynamic_index_in_dim(a_DT, t, axis=1, keepdims=False)


def _put(a_DT: Array, value_D: Array, t: Array) -> Array:
    """`a` with step t of every direction set to `value`: `a.at[:, t].set(value)`."""
    return jax.lax.dynamic_update_index_in_dim(a_DT, value_D, t, axis=1)


def _joined(parts: list[Array], operands: Any) -> Array:
    """`jnp.concatenate(parts, axis=-1).astype(operands)`, in one op of a loop step when the
    cast rounds to a 16-bit float and the widths share a factor of 16 or more.

    XLA on CPU never fuses a concatenation along the minor axis (of 64 bytes or more), so
    a step ran its parts, the concatenation and the cast as separate ops. Here the parts
    are joined as rows of width k (the gcd of their widths) on the axis before,
    `[..., w] -> [..., w / k, k]`, and reshaped back: the same values, concatenated along
    a major axis, which XLA fuses with the parts and the cast (narrower rows keep the
    plain concatenation): the bfloat16 forward step runs 15 ops instead of 17 (the
    backward step writes its `dz` part by part instead, `_stored_gate_grads`). In
    float32 the joined array feeds two ops (the matmul and the stored copy), XLA would
    compute the fused join twice, and the step was no faster, so there the
    concatenation stays as it is.
    """
    k = math.gcd(*(p.shape[-1] for p in parts))
    if jnp.dtype(operands).itemsize != 2 or k < 16:
        return jnp.concatenate(parts, axis=-1).astype(operands)
    rows = [p.reshape(*p.shape[:-1], p.shape[-1] // k, k) for p in parts]
    joined = jnp.concatenate(rows, axis=-2).astype(operands)
    return joined.reshape(*joined.shape[:-2], -1)


def _stored_gate_grads(
    dz_all: Array, parts: list[Array], t: Array, operands: Any
) -> tuple[Array, Array]:
    """Store step t's `dz = [dz_i, dz_f, dz_g, dz_o]` (the four gates' `parts`, cast to
    `operands`) in `dz_all` (`[D, time, batch, 4H]`, stored as `_bits`); returns the
    updated `dz_all` and `dz` for the step's matmul.

    With 16-bit operands each part is cast and written into its gate's columns (four
    in-place updates) and `dz` read back, instead of one fused concatenation and cast:
    XLA on CPU compiles that fusion into vector code at LLVM's -O1 (the trainer's
    `compiler_options`) but into scalar code at its default -O2, which a user's own
    `jax.jit` gets: 77 us a step of the IMDB BiLSTM's backward loop instead of 8. Written
    part by part, the step runs as fast at either level. In float32 the concatenation
    stays: the parts written one by one were level or slower.
    """
    if jnp.dtype(operands).itemsize != 2:
        dz = _joined(parts, operands)  # the plain concatenation and cast
        return _put(dz_all, dz, t), dz
    hidden = parts[0].shape[-1]
    for k, part in enumerate(parts):
        bits = jax.lax.bitcast_convert_type(part.astype(operands), dz_all.dtype)
        dz_all = jax.lax.dynamic_update_slice(dz_all, bits[:, None], (0, t, 0, k * hidden))
    return dz_all, jax.lax.bitcast_convert_type(_at(dz_all, t), operands)


def _bits(dtype: Any) -> Any:
    """The dtype a loop stores `dtype` values as: an unsigned integer of the same width for a
    16-bit float, the dtype itself otherwise (see `_fused_bwd`)."""
    return jnp.uint16 if jnp.dtype(dtype).itemsize == 2 else jnp.dtype(dtype)


def _forward(params: Params, x_DTBE: Array, m_DTB: Array, unroll: int, operands: Any, kernel: str):
    """Run all directions in one loop (`_forward_loop`, or `cpu_kernel.forward` for kernel
    "cpu"); returns outputs, final carries and the residuals `(stored, xh_T)`.

    `_forward_loop`'s outputs `y_t` are read back from `xh_T` after the loop, which also
    sets its row of ones. With 16-bit operands they are the values the next layer's matmul
    takes (the last one rounded to match); the final carries stay in the input dtype.
    """
    embed = x_DTBE.shape[-1]
    wu = jnp.concatenate([params["kernel"], params["recurrent_kernel"]], axis=1)  # [W; U]
    if kernel == "cpu":
        carry, stored, xh_T, ys = cpu_kernel.forward(wu, params["bias"], x_DTBE, m_DTB)
    else:
        loop = (wu.astype(operands), params["bias"], x_DTBE, m_DTB)
        carry, stored, xh_T = _forward_loop(*loop, unroll, operands)
    bits = xh_T.dtype
    xh_T = xh_T.at[:, -1].set(jax.lax.bitcast_convert_type(jnp.ones((), operands), bits))
    xh_T = jax.lax.bitcast_convert_type(xh_T, operands)
    if kernel != "cpu":
        h_last = jnp.swapaxes(carry[0], 1, 2)[:, :, None].astype(operands)  # rounded as the rest
        h_after = jnp.concatenate([xh_T[:, embed:-1, 1:], h_last], 2).astype(x_DTBE.dtype)
        ys = jnp.where(m_DTB[..., None], jnp.moveaxis(h_after, 1, 3), 0.0)
    return ys, carry, (stored, xh_T)


def _forward_loop(wu: Array, bias: Array, x_DTBE: Array, m_DTB: Array, unroll: int, operands: Any):
    """The forward loop in `lax`, on the stacked kernels `wu = [W; U] <[D, E + H, 4H]>` (in
    `operands`) and `bias <[D, 4H]>`: returns the final carries `(h, c)`, the stored gates
    and cell states `(i, f, g, o, c_prev)` and `xh_T`, its row of ones not yet set.

    The loop is a `lax.fori_loop` over the step index (JAX runs it as a `lax.scan`), so
    that every stored sequence can keep the direction axis first.

    Per step the loop does one batched matmul `[x_t, h_{t-1}] [W; U]` for all directions
    (its inputs in `operands`, accumulated in the input dtype), one fusion for the four
    activated gates `act = (i, f, g, o)` and one each for the masked `h_t` and `c_t`.

    It stores, for the backward pass, the gates `(i, f, g, o)` and the cell state before
    the step, `c_{t-1}`, as `[D, time, batch, H]`, and the matmul's input `[x_t, h_{t-1}]`
    transposed, as column t of `xh_T <[D, E + H + 1, time, batch]>`, whose last row is
    ones: the left operand of the weight and bias gradients' matmul, which then runs on it
    as it lies. The outputs `y_t` are read back from it after the loop.

    `xh_T` holds the matmul's input as the matmul takes it, in `operands` (a 16-bit dtype
    through its unsigned integer view, `_bits`, as the backward pass stores `dz`). With
    bfloat16 operands the step's concatenation and cast are one op, the weight gradients'
    matmul needs no conversion pass over `xh_T` after the loop, and `xh_T` is half the
    size.
    """
    directions, time, batch, embed = x_DTBE.shape
    hidden = wu.shape[-1] // 4
    dtype = x_DTBE.dtype
    slope = _gate_slope(hidden, dtype)
    offset = 1.0 - slope
    bias = bias[:, None]
    # The loop writes every slot of these arrays but the row of ones, so their initial
    # values are never read. The row of ones is set after the loop: set on the zeros here,
    # XLA folded the whole initial array into a constant held by the executable (of every
    # compiled shape) and copied out of it every step. The five stored arrays start from
    # distinct values, or XLA merges their fills into one and copies it four times a step.
    bits = _bits(operands)
    xh_T = jnp.zeros((directions, embed + hidden + 1, time, batch), bits)
    zeros = jnp.zeros((directions, batch, hidden), dtype)
    stored = tuple(jnp.full((directions, time, batch, hidden), k, dtype) for k in range(5))

    def body(t, state):
        (h, c), stored, xh_T = state
        xh = _joined([_at(x_DTBE, t), h], operands)
        z = _bmm(xh, wu, operands, dtype) + bias
        act = offset + slope * jnp.tanh(slope * z)
        i, f, g, o = jnp.split(act, 4, axis=-1)
        c_new = f * c + i * g
        m = _at(m_DTB, t)[..., None]
        h_new = jnp.where(m, o * jnp.tanh(c_new), h)
        c_new = jnp.where(m, c_new, c)
        stored = tuple(_put(a, v, t) for a, v in zip(stored, (i, f, g, o, c), strict=True))
        xh_bits = jax.lax.bitcast_convert_type(jnp.swapaxes(xh, 1, 2), bits)
        xh_T = jax.lax.dynamic_update_slice(xh_T, xh_bits[:, :, None], (0, 0, t, 0))
        return (h_new, c_new), stored, xh_T

    if time == 0:  # nothing to run (tracing the body would slice an empty axis)
        return (zeros, zeros), stored, xh_T
    return jax.lax.fori_loop(0, time, body, ((zeros, zeros), stored, xh_T), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _fused(params, x, m, unroll, operands, kernel):
    ys, carry, _ = _forward(params, x, m, unroll, operands, kernel)
    return ys, carry


def _fused_fwd(params, x, m, unroll, operands, kernel):
    ys, carry, residuals = _forward(params, x, m, unroll, operands, kernel)
    return (ys, carry), (params, m, residuals)


def _fused_bwd(unroll, operands, kernel, saved, cotangents):
    """The reverse scan of the module docstring (`_backward_loop`, or
    `cpu_kernel.backward` for kernel "cpu"), then the large matmuls after it: the weight
    and bias gradients from `xh_T` and the stored `dz`, the input gradients from `dz`.
    """
    params, m_DTB, (stored, xh_T) = saved
    dys, (dh_last, dc_last) = cotangents
    directions, time, batch, hidden = dys.shape
    embed = params["kernel"].shape[1]
    # Transposed once here, not per step with `b_transposed`: given `U` as it lies, the
    # float32 step's `dz U^T` ran slower.
    u_transposed = jnp.swapaxes(params["recurrent_kernel"], 1, 2).astype(operands)
    if kernel == "cpu":
        dz_all = cpu_kernel.backward(stored, m_DTB, dys, dh_last, dc_last, u_transposed)
    else:
        loop = (stored, m_DTB, dys, dh_last, dc_last, u_transposed)
        dz_all = _backward_loop(*loop, unroll, operands)
    dz_all = jax.lax.bitcast_convert_type(dz_all, operands)
    # One row per (step, example); the sizes spelled out, as -1 fails on an empty batch.
    dz_DNG = dz_all.reshape(directions, time * batch, 4 * hidden)
    xh = xh_T.reshape(directions, embed + hidden + 1, time * batch)
    if kernel == "cpu" and cpu_kernel.weight_grad_fits(embed, hidden):
        dwu = cpu_kernel.weight_grad(xh, dz_DNG)
    else:
        dwu = _bmm(xh, dz_DNG, operands, dys.dtype)
    dparams = {
        "kernel": dwu[:, :embed],
        "recurrent_kernel": dwu[:, embed:-1],
        "bias": dwu[:, -1],
    }
    dx = _bmm(dz_DNG, params["kernel"], operands, dys.dtype, b_transposed=True)
    return dparams, dx.reshape(directions, time, batch, embed), None


def _backward_loop(stored, m_DTB, dys, dh_last, dc_last, u_transposed, unroll, operands):
    """The reverse scan in `lax`: returns the stored `dz <[D, time, batch, 4H]>`.

    Each step reads the four stored gate arrays whole (see the module docstring). Every
    matmul takes `operands`-typed inputs and accumulates in the input dtype, as in the
    forward pass. The step casts `dz` to `operands` once, for its own matmul, and stores
    that: the weight and input gradients' matmuls take it as it lies. A 16-bit `dz` is
    stored through an unsigned integer view (`_bits`): XLA on CPU turns an update of a
    bfloat16 array into a float32 pass over the whole array (convert, update, convert
    back), which doubled the bfloat16 layer's gradient time.
    """
    i_all, f_all, g_all, o_all, c_prev_all = stored
    directions, time, batch, hidden = c_prev_all.shape
    dtype = dys.dtype
    dz_all = jnp.zeros((directions, time, batch, 4 * hidden), _bits(operands))

    def body(k, state):
        t = time - 1 - k
        (dh, dc), dz_all = state
        i, f, g, o, c_prev = (_at(a, t) for a in (i_all, f_all, g_all, o_all, c_prev_all))
        m = _at(m_DTB, t)[..., None]
        tc = jnp.tanh(f * c_prev + i * g)
        dht = jnp.where(m, dh + _at(dys, t), 0.0)
        dct = jnp.where(m, dc, 0.0) + dht * o * (1.0 - tc * tc)
        parts = [
            dct * g * i * (1.0 - i),
            dct * c_prev * f * (1.0 - f),
            dct * i * (1.0 - g * g),
            dht * tc * o * (1.0 - o),
        ]
        dz_all, dz = _stored_gate_grads(dz_all, parts, t, operands)
        dh_prev = _bmm(dz, u_transposed, operands, dtype) + jnp.where(m, 0.0, dh)
        dc_prev = dct * f + jnp.where(m, 0.0, dc)
        return (dh_prev, dc_prev), dz_all

    if time == 0:
        return dz_all
    return jax.lax.fori_loop(0, time, body, ((dh_last, dc_last), dz_all), unroll=unroll)[1]


_fused.defvjp(_fused_fwd, _fused_bwd)


def _stacked(*params: Any) -> Params:
    """The directions' LSTM parameters stacked on a leading axis: `{name: [D, ...]}`."""
    return {k: jnp.stack([p[k] for p in params]) for k in ("kernel", "recurrent_kernel", "bias")}


# ----------------------------------------------------------------------------------
# Public layers: time-major in, time-major out (recurrence does the batch-major faces).
# ----------------------------------------------------------------------------------
KERNELS = ("loop", "cpu", "pallas", "interpret")


def _run(kernel: str, params: Params, x_DTBE: Array, m_DTB: Array, unroll: int, operands: Any):
    """The core on `kernel`: "loop" is `_fused` above with its `lax` loops; "cpu" the
    same with its loops as the native code of `lstm_jax.cpu_kernel`; "pallas" the GPU
    kernels of `lstm_jax.pallas_lstm`, the same function ("interpret": those in Pallas'
    interpret mode, on any backend, slow: for checking them without a GPU)."""
    if kernel == "loop":
        return _fused(params, x_DTBE, m_DTB, unroll, operands, kernel)
    if kernel == "cpu":
        batch, embed = x_DTBE.shape[2:]
        hidden = params["recurrent_kernel"].shape[1]
        if not cpu_kernel.takes(embed, hidden, batch, x_DTBE.dtype, operands):
            raise ValueError(
                f"the native CPU loops do not run this layer here ({embed} inputs, {hidden} "
                f"units, {batch} sequences, {x_DTBE.dtype} inputs, "
                f"{jnp.dtype(operands).name} matmuls, backend {jax.default_backend()!r}; "
                "see lstm_jax.cpu_kernel); use kernel='loop'"
            )
        return _fused(params, x_DTBE, m_DTB, unroll, operands, kernel)
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {list(KERNELS)}")
    from lstm_jax import pallas_lstm  # Pallas is imported only where it runs

    return pallas_lstm.lstm_core(params, x_DTBE, m_DTB, operands, interpret=kernel == "interpret")


def _operands(xs_TBE: Array, matmul_dtype: Any) -> Any:
    """The matmuls' input dtype: `matmul_dtype`, or the inputs' own when None."""
    return jnp.dtype(xs_TBE.dtype if matmul_dtype is None else matmul_dtype)


def lstm_layer_tm(
    params: Params,
    xs_TBE: Array,
    mask_TB: Array,
    *,
    reverse: bool = False,
    unroll: int = 1,
    matmul_dtype: Any = None,
    kernel: str = "loop",
) -> tuple[Array, tuple[Array, Array]]:
    """One LSTM direction over `<float>[time, batch, E]` with `<bool>[time, batch]` mask.

    Returns `(ys <float>[time, batch, H], (h, c))` as `recurrence.rnn` does for the "lstm"
    cell from a zero carry (`reverse=True`: from each sequence's last real step back).
    `matmul_dtype` (e.g. `jnp.bfloat16`) casts the inputs of every matmul, forward and
    backward (the bias gradient is one of them: a row of ones in the weight gradients'
    matmul); they still accumulate, and the gates and the cell state are computed, in
    the dtype of `xs_TBE`; the outputs `ys` come back rounded to `matmul_dtype` (the
    inputs of the next layer's matmul), the final carry unrounded. None keeps every
    matmul in that dtype. `kernel` (one of `KERNELS`) picks what runs the loops: this
    module's `lax` loops, their native CPU form (`lstm_jax.cpu_kernel`), or the Pallas
    GPU kernels of `lstm_jax.pallas_lstm` (`unroll` is then unused).
    """
    if reverse:
        xs_TBE, mask_TB = _flip(xs_TBE), _flip(mask_TB)
    operands = _operands(xs_TBE, matmul_dtype)
    ys, (h, c) = _run(kernel, _stacked(params), xs_TBE[None], mask_TB[None], unroll, operands)
    return (_flip(ys[0]) if reverse else ys[0]), (h[0], c[0])


def lstm_bidirectional_tm(
    params_fwd: Params,
    params_bwd: Params,
    xs_TBE: Array,
    mask_TB: Array,
    *,
    unroll: int = 1,
    matmul_dtype: Any = None,
    kernel: str = "loop",
) -> tuple[Array, Array, tuple[tuple[Array, Array], tuple[Array, Array]]]:
    """Both LSTM directions in one loop over `<float>[time, batch, E]`.

    Returns `(ys_fwd <float>[time, batch, H], ys_bwd <float>[time, batch, H],
    (carry_fwd, carry_bwd))`, each as `recurrence.rnn` would give it; `matmul_dtype` and
    `kernel` as in `lstm_layer_tm`.
    """
    ys, (h, c) = _run(
        kernel,
        _stacked(params_fwd, params_bwd),
        jnp.stack([xs_TBE, _flip(xs_TBE)]),
        jnp.stack([mask_TB, _flip(mask_TB)]),
        unroll,
        _operands(xs_TBE, matmul_dtype),
    )
    return ys[0], _flip(ys[1]), ((h[0], c[0]), (h[1], c[1]))
