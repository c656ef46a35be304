"""A fused LSTM recurrence with a hand-written backward pass (the fast path of `recurrence`).

`lstm_layer_tm` (one direction) and `lstm_bidirectional_tm` (both directions in one scan)
compute what `recurrence.rnn` / `recurrence.bidirectional` compute for the "lstm" cell
from a zero carry, with the same padding rules, but differentiate through a
`jax.custom_vjp` instead of letting autodiff transpose the scan step by step.

Forward (per direction, scan order t = 0..T-1; the backward direction scans a time-reversed
copy of its inputs, so "scan order" is its own order), with mask m_t = [t < length]:

    z_t  = x_t W + h_{t-1} U + b                  W = kernel, U = recurrent_kernel
    i, f, g, o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
    c~_t = f c_{t-1} + i g,   h~_t = o tanh(c~_t)
    c_t  = m_t ? c~_t : c_{t-1},   h_t = m_t ? h~_t : h_{t-1},   y_t = m_t ? h~_t : 0

The forward scan stores the activated gates i, f, g, o (four arrays) and the carry
(h_t, c_t) of every step; c_{t-1} and h_{t-1} are those carries shifted by one step.

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

    [dW; dU] = sum_t [x_t, h_{t-1}]^T dz_t,   db = sum_t,b dz_t,   dx_t = dz_t W^T

Both directions of a bidirectional layer run in the same scan (the backward one over a
time-reversed copy of the inputs and mask: each sequence's padding comes first, where the
masked steps keep the zero carry, then its real steps from last to first), so the loop
runs T steps, not 2T.

Layout, for XLA on CPU (measured on the BiLSTM train step, see `_fused_bwd` and
`_rows_contracted`): a loop fusion that reads several slices of one array sliced from the
stored sequence (the gates of step t out of one `[time, batch, 4H]` array) is compiled
without vectorisation, about 10x slower than the same arithmetic on whole arrays. So the
gates are stored as four arrays, and the backward step reads each whole.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Params = dict[str, Array]


def _flip(x_T: Array) -> Array:
    """Reverse the time axis (axis 0) of a time-major array."""
    return jnp.flip(x_T, axis=0)


# ----------------------------------------------------------------------------------
# The core: D directions, each in its own scan order, as one custom-VJP function.
# ----------------------------------------------------------------------------------
def _gate_scale(hidden: int, dtype: Any) -> Array:
    """`<float>[1, 4H]`: 1 on the sigmoid gates (i, f, o), 2 on the tanh candidate g.

    With it every gate is one expression, `act = s sigmoid(s z) - (s - 1)`, since
    `tanh(z) = 2 sigmoid(2z) - 1`: the forward step activates all four gates in one
    full-width fusion on the matmul's output.
    """
    ones = jnp.ones((hidden,), dtype)
    return jnp.concatenate([ones, ones, 2.0 * ones, ones])[None]


def _matmul(a: Array, b: Array, operands: Any, out: Any) -> Array:
    """`a @ b` on `operands`-typed inputs, accumulated and returned in `out`."""
    return jnp.matmul(a.astype(operands), b.astype(operands), preferred_element_type=out)


def _forward(
    params: tuple[Params, ...],
    xs: tuple[Array, ...],
    masks: tuple[Array, ...],
    unroll: int,
    operands: Any,
):
    """Scan all directions at once; returns outputs, final carries and the residuals.

    Per direction and step the loop does one matmul `[x_t, h_{t-1}] [W; U]` (its inputs
    in `operands`, accumulated in the input dtype), one fusion for the four activated
    gates `act = (i, f, g, o)` and one each for the masked `h_t` and `c_t`; it stores the
    gates `(i, f, g, o)`, `h_t` and `c_t` for the backward pass.
    """
    batch = xs[0].shape[1]
    hidden = params[0]["recurrent_kernel"].shape[0]
    dtype = xs[0].dtype
    scale = _gate_scale(hidden, dtype)
    zeros = jnp.zeros((batch, hidden), dtype)
    carry0 = tuple((zeros, zeros) for _ in params)
    stacked = tuple(
        (
            jnp.concatenate([p["kernel"], p["recurrent_kernel"]], axis=0).astype(operands),
            p["bias"][None],
        )
        for p in params
    )
    xs = tuple(x_TBE.astype(operands) for x_TBE in xs)

    def body(carry, inputs):
        x_t, m_t = inputs
        new_carry, emitted = [], []
        for (wu, b), (h, c), x_BE, m_B in zip(stacked, carry, x_t, m_t, strict=True):
            xh = jnp.concatenate([x_BE, h.astype(operands)], axis=-1)
            z = _matmul(xh, wu, operands, dtype) + b
            act = scale * jax.nn.sigmoid(scale * z) - (scale - 1.0)
            i, f, g, o = jnp.split(act, 4, axis=-1)
            c_new = f * c + i * g
            m = m_B[:, None]
            h_new = jnp.where(m, o * jnp.tanh(c_new), h)
            c_new = jnp.where(m, c_new, c)
            new_carry.append((h_new, c_new))
            emitted.append(((i, f, g, o), h_new, c_new))
        return tuple(new_carry), tuple(emitted)

    carry, emitted = jax.lax.scan(body, carry0, (xs, masks), unroll=unroll)
    ys = tuple(
        jnp.where(m_TB[:, :, None], h_TBH, 0.0)
        for m_TB, (_, h_TBH, _) in zip(masks, emitted, strict=True)
    )
    return ys, carry, emitted


def _shift(a_TBH: Array) -> Array:
    """The carry before each step from the carries after: `[0, a_0, ..., a_{T-2}]`."""
    return jnp.concatenate([jnp.zeros_like(a_TBH[:1]), a_TBH[:-1]], axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fused(params, xs, masks, unroll, operands):
    ys, carry, _ = _forward(params, xs, masks, unroll, operands)
    return ys, carry


def _fused_fwd(params, xs, masks, unroll, operands):
    ys, carry, residuals = _forward(params, xs, masks, unroll, operands)
    return (ys, carry), (params, xs, masks, residuals)


def _fused_bwd(unroll, operands, saved, cotangents):
    """The reverse scan of the module docstring, then the large matmuls after it.

    Each step reads the four stored gate arrays whole. Slicing them out of one stored
    `[time, batch, 4H]` array instead made XLA on CPU compile the step's fusions without
    vectorisation: one direction's step at batch 32 took 34 us against 24 us now.
    Every matmul takes `operands`-typed inputs and accumulates in the input dtype, as in
    the forward pass. `dz` is stored in the input dtype and cast after the loop: a cast
    inside the step's store compiled to a slow fusion (90 us a step).
    """
    params, xs, masks, residuals = saved
    dys, dcarry = cotangents
    dtype = dys[0].dtype
    u_transposed = tuple(p["recurrent_kernel"].T.astype(operands) for p in params)
    c_prevs = tuple(_shift(c_TBH) for _, _, c_TBH in residuals)
    gates = tuple(gates_T for gates_T, _, _ in residuals)

    def body(carry, inputs):
        dy_t, gates_t, c_prev_t, m_t = inputs
        new_carry, dzs = [], []
        for u_t, (dh, dc), dy, (i, f, g, o), c_prev, m_B in zip(
            u_transposed, carry, dy_t, gates_t, c_prev_t, m_t, strict=True
        ):
            m = m_B[:, None]
            tc = jnp.tanh(f * c_prev + i * g)
            dht = jnp.where(m, dh + dy, 0.0)
            dct = jnp.where(m, dc, 0.0) + dht * o * (1.0 - tc * tc)
            dz = jnp.concatenate(
                [
                    dct * g * i * (1.0 - i),
                    dct * c_prev * f * (1.0 - f),
                    dct * i * (1.0 - g * g),
                    dht * tc * o * (1.0 - o),
                ],
                axis=-1,
            )
            dh_prev = _matmul(dz, u_t, operands, dtype) + jnp.where(m, 0.0, dh)
            new_carry.append((dh_prev, dct * f + jnp.where(m, 0.0, dc)))
            dzs.append(dz)
        return tuple(new_carry), tuple(dzs)

    dcarry0 = tuple(tuple(d) for d in dcarry)
    _, dzs = jax.lax.scan(body, dcarry0, (dys, gates, c_prevs, masks), reverse=True, unroll=unroll)

    dparams, dxs = [], []
    for p, x_TBE, (_, h_TBH, _), dz_TBG in zip(params, xs, residuals, dzs, strict=True):
        dz_NG = _rows(dz_TBG).astype(operands)
        x_NE, h_prev_NH = _rows(x_TBE.astype(operands)), _rows(_shift(h_TBH).astype(operands))
        dparams.append(
            {
                "kernel": _rows_contracted(x_NE, dz_NG, dtype),
                "recurrent_kernel": _rows_contracted(h_prev_NH, dz_NG, dtype),
                "bias": jnp.sum(_rows(dz_TBG), axis=0),
            }
        )
        dx_NE = _matmul(dz_NG, p["kernel"].T, operands, x_TBE.dtype)
        dxs.append(dx_NE.reshape(x_TBE.shape))
    return tuple(dparams), tuple(dxs), None


def _rows(a_TBK: Array) -> Array:
    """`<float>[time * batch, K]`: one row per (step, example); a free reshape."""
    return a_TBK.reshape(-1, a_TBK.shape[-1])


def _rows_contracted(a_NK: Array, b_NG: Array, out: Any) -> Array:
    """`a^T b`, `<float>[K, G]`, summed over the N rows of both.

    Written as one 2-D `dot_general` on row-major matrices: a 3-D einsum over (time, batch)
    made XLA on CPU transpose both operands first, and the transposes cost more than the
    matmul (measured: a BiLSTM layer's gradient, batch 64 on two CPU devices, T=256, 69 to
    62 ms).
    """
    return jax.lax.dot_general(a_NK, b_NG, (((0,), (0,)), ((), ())), preferred_element_type=out)


_fused.defvjp(_fused_fwd, _fused_bwd)


def _lstm_params(params: Any) -> Params:
    return {k: params[k] for k in ("kernel", "recurrent_kernel", "bias")}


# ----------------------------------------------------------------------------------
# Public layers: time-major in, time-major out (recurrence does the batch-major faces).
# ----------------------------------------------------------------------------------
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
):
    """One LSTM direction over `<float>[time, batch, E]` with `<bool>[time, batch]` mask.

    Returns `(ys <float>[time, batch, H], (h, c))` as `recurrence.rnn` does for the "lstm"
    cell from a zero carry (`reverse=True`: from each sequence's last real step back).
    `matmul_dtype` (e.g. `jnp.bfloat16`) casts the inputs of every matmul, forward and
    backward; they still accumulate, and the gates and the cell state are computed, in
    the dtype of `xs_TBE`. None keeps every matmul in that dtype.
    """
    if reverse:
        xs_TBE, mask_TB = _flip(xs_TBE), _flip(mask_TB)
    operands = _operands(xs_TBE, matmul_dtype)
    (ys_TBH,), (carry,) = _fused((_lstm_params(params),), (xs_TBE,), (mask_TB,), unroll, operands)
    return (_flip(ys_TBH) if reverse else ys_TBH), carry


def lstm_bidirectional_tm(
    params_fwd: Params,
    params_bwd: Params,
    xs_TBE: Array,
    mask_TB: Array,
    *,
    unroll: int = 1,
    matmul_dtype: Any = None,
):
    """Both LSTM directions in one scan over `<float>[time, batch, E]`.

    Returns `(ys_fwd <float>[time, batch, H], ys_bwd <float>[time, batch, H],
    (carry_fwd, carry_bwd))`, each as `recurrence.rnn` would give it; `matmul_dtype` as
    in `lstm_layer_tm`.
    """
    (ys_f, ys_b), (carry_f, carry_b) = _fused(
        (_lstm_params(params_fwd), _lstm_params(params_bwd)),
        (xs_TBE, _flip(xs_TBE)),
        (mask_TB, _flip(mask_TB)),
        unroll,
        _operands(xs_TBE, matmul_dtype),
    )
    return ys_f, _flip(ys_b), (carry_f, carry_b)
