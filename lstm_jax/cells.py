"""Recurrent cells as pure step functions with `jax.lax.scan`'s signature.

Every cell here is `cell(params, carry, x_t) -> (carry, y_t)`, with its parameters an
explicit pytree (a dict of arrays) made by the matching `init_*(key, input_size,
hidden_size)`. A cell sees one time step of a batch: `x_t` is `<float>[batch, input]` and
the carry holds `<float>[batch, hidden]` arrays. Running a cell over time, masking and
directions live in `lstm_jax.recurrence`; nothing here knows about sequences.

Gates are fused: one `(input, G*H)` input kernel and one `(H, G*H)` recurrent kernel,
split with `jnp.split`, so a whole sequence's input projection can be one matmul.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, jax.Array]
Array = jax.Array


# ----------------------------------------------------------------------------------
# Initialisers (Keras defaults, so a fresh model starts as the Keras tutorial's does).
# ----------------------------------------------------------------------------------
def glorot_uniform(key: Array, shape: tuple[int, int], dtype: Any = jnp.float32) -> Array:
    """Keras' `glorot_uniform`: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = shape
    limit = jnp.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def orthogonal(key: Array, shape: tuple[int, int], dtype: Any = jnp.float32) -> Array:
    """Keras' `orthogonal` for a `(rows, cols)` matrix (gain 1)."""
    return jax.nn.initializers.orthogonal()(key, shape, dtype)


def _init_gated(key: Array, input_size: int, hidden_size: int, gates: int) -> Params:
    _check_sizes(input_size, hidden_size)
    k_kernel, k_recurrent = jax.random.split(key)
    return {
        "kernel": glorot_uniform(k_kernel, (input_size, gates * hidden_size)),
        "recurrent_kernel": orthogonal(k_recurrent, (hidden_size, gates * hidden_size)),
        "bias": jnp.zeros((gates * hidden_size,), jnp.float32),
    }


def _check_sizes(input_size: int, hidden_size: int) -> None:
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


# ----------------------------------------------------------------------------------
# LSTM (Keras layout).
# ----------------------------------------------------------------------------------
def init_lstm(key: Array, input_size: int, hidden_size: int) -> Params:
    """Parameters of `lstm_cell` in Keras' layout and with Keras' default initialisation.

    `kernel <float32>[input, 4H]` glorot-uniform, `recurrent_kernel <float32>[H, 4H]`
    orthogonal, `bias <float32>[4H]` zero except the forget slice, which is 1
    (`unit_forget_bias=True`). Gate order along the 4H axis: i, f, c, o.
    """
    params = _init_gated(key, input_size, hidden_size, 4)
    params["bias"] = params["bias"].at[hidden_size : 2 * hidden_size].set(1.0)
    return params


def lstm_cell(
    params: Params, carry: tuple[Array, Array], x_t: Array
) -> tuple[tuple[Array, Array], Array]:
    """One LSTM step. Carry `(h, c)`, both `<float>[batch, H]`; output `h_{t+1}`.

    z   = x_t @ kernel + h_t @ recurrent_kernel + bias,   split into (i, f, g, o)
    i   = sigmoid(z_i)        input gate
    f   = sigmoid(z_f)        forget gate
    g   = tanh(z_g)           candidate cell state ("c" in Keras' names)
    o   = sigmoid(z_o)        output gate
    c_{t+1} = f * c_t + i * g
    h_{t+1} = o * tanh(c_{t+1})
    """
    h, c = carry
    z = x_t @ params["kernel"] + h @ params["recurrent_kernel"] + params["bias"][None]
    return lstm_gates(z, c)


def lstm_gates(z: Array, c: Array) -> tuple[tuple[Array, Array], Array]:
    """The LSTM's pointwise part: pre-activations `z <float>[batch, 4H]` and `c_t` to
    `((h_{t+1}, c_{t+1}), h_{t+1})`. Shared by the cell and the fused recurrence paths."""
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


# ----------------------------------------------------------------------------------
# Simple RNN.
# ----------------------------------------------------------------------------------
def init_simple_rnn(key: Array, input_size: int, hidden_size: int) -> Params:
    """Parameters of `simple_rnn_cell`: `kernel [input, H]` glorot-uniform,
    `recurrent_kernel [H, H]` orthogonal, `bias [H]` zero (Keras' `SimpleRNN`)."""
    return _init_gated(key, input_size, hidden_size, 1)


def simple_rnn_cell(params: Params, carry: Array, x_t: Array) -> tuple[Array, Array]:
    """One Elman RNN step. Carry `h <float>[batch, H]`; output `h_{t+1}`.

    h_{t+1} = tanh(x_t @ kernel + h_t @ recurrent_kernel + bias)
    """
    h = jnp.tanh(x_t @ params["kernel"] + carry @ params["recurrent_kernel"] + params["bias"][None])
    return h, h


# ----------------------------------------------------------------------------------
# The lecture's "carry" LSTM.
# ----------------------------------------------------------------------------------
def init_carry_lstm(key: Array, input_size: int, hidden_size: int) -> Params:
    """Parameters of `carry_lstm_cell`: `kernel [input, 4H]` and `recurrent_kernel
    [H, 4H]` for the fused (o, i, f, k) pre-activations, `carry_kernel [H, H]` for the
    carry's contribution to the output, `bias [4H]` (zero, forget slice 1)."""
    k_gated, k_carry = jax.random.split(key)
    params = _init_gated(k_gated, input_size, hidden_size, 4)
    params["carry_kernel"] = orthogonal(k_carry, (hidden_size, hidden_size))
    params["bias"] = params["bias"].at[2 * hidden_size : 3 * hidden_size].set(1.0)
    return params


def carry_lstm_cell(
    params: Params, carry: tuple[Array, Array], x_t: Array
) -> tuple[tuple[Array, Array], Array]:
    """One step of the lecture's LSTM, written as a "carry track" beside a simple RNN.

    Carry `(state_t, c_t)`, both `<float>[batch, H]`; gate order along 4H: o, i, f, k.

        output_t  = tanh(state_t @ U_o + x_t @ W_o + c_t @ V_o + b_o)
        i_t       = sigmoid(state_t @ U_i + x_t @ W_i + b_i)
        f_t       = sigmoid(state_t @ U_f + x_t @ W_f + b_f)
        k_t       = tanh(state_t @ U_k + x_t @ W_k + b_k)
        c_{t+1}   = i_t * k_t + c_t * f_t
        state_{t+1} = output_t

    (The lecture leaves the activations unnamed; these are the usual choices: sigmoid
    for the gates i and f, tanh for the output and the candidate k.) Unlike the standard
    LSTM, the carry enters the output through its own matrix `V_o` (`carry_kernel`)
    instead of through `tanh(c)` times an output gate.
    """
    state, c = carry
    z = x_t @ params["kernel"] + state @ params["recurrent_kernel"] + params["bias"][None]
    z_o, z_i, z_f, z_k = jnp.split(z, 4, axis=-1)
    output = jnp.tanh(z_o + c @ params["carry_kernel"])
    c = jax.nn.sigmoid(z_i) * jnp.tanh(z_k) + c * jax.nn.sigmoid(z_f)
    return (output, c), output


# ----------------------------------------------------------------------------------
# GRU (Keras' default `reset_after=True`, the cuDNN-compatible form).
# ----------------------------------------------------------------------------------
def init_gru(key: Array, input_size: int, hidden_size: int) -> Params:
    """Parameters of `gru_cell`: `kernel [input, 3H]`, `recurrent_kernel [H, 3H]`,
    `bias [3H]` for the input side and `recurrent_bias [3H]` for the recurrent side
    (both zero); gate order z, r, n as in Keras."""
    params = _init_gated(key, input_size, hidden_size, 3)
    params["recurrent_bias"] = jnp.zeros((3 * hidden_size,), jnp.float32)
    return params


def gru_cell(params: Params, carry: Array, x_t: Array) -> tuple[Array, Array]:
    """One GRU step (reset gate applied after the recurrent matmul). Carry `h [batch, H]`.

    x_z, x_r, x_n = split(x_t @ kernel + bias)
    h_z, h_r, h_n = split(h_t @ recurrent_kernel + recurrent_bias)
    z = sigmoid(x_z + h_z)              update gate
    r = sigmoid(x_r + h_r)              reset gate
    n = tanh(x_n + r * h_n)             candidate
    h_{t+1} = z * h_t + (1 - z) * n
    """
    x_z, x_r, x_n = jnp.split(x_t @ params["kernel"] + params["bias"][None], 3, axis=-1)
    h_z, h_r, h_n = jnp.split(
        carry @ params["recurrent_kernel"] + params["recurrent_bias"][None], 3, axis=-1
    )
    z = jax.nn.sigmoid(x_z + h_z)
    r = jax.nn.sigmoid(x_r + h_r)
    n = jnp.tanh(x_n + r * h_n)
    h = z * carry + (1.0 - z) * n
    return h, h


# ----------------------------------------------------------------------------------
# Registry: one name per cell, used by layers, models and the studies.
# ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CellSpec:
    """A cell's step function, its initialiser and the number of arrays in its carry."""

    name: str
    step: Callable
    init: Callable
    carry_parts: int

    def zero_carry(self, batch: int, hidden_size: int, dtype: Any = jnp.float32) -> Any:
        """The initial carry for `batch` sequences: zeros, as in Keras."""
        zeros = jnp.zeros((batch, hidden_size), dtype)
        return zeros if self.carry_parts == 1 else (zeros,) * self.carry_parts


CELLS: dict[str, CellSpec] = {
    "lstm": CellSpec("lstm", lstm_cell, init_lstm, 2),
    "simple_rnn": CellSpec("simple_rnn", simple_rnn_cell, init_simple_rnn, 1),
    "carry_lstm": CellSpec("carry_lstm", carry_lstm_cell, init_carry_lstm, 2),
    "gru": CellSpec("gru", gru_cell, init_gru, 1),
}


def get_cell(name: str) -> CellSpec:
    """The `CellSpec` called `name`; a clear error lists the choices otherwise."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; choose one of {sorted(CELLS)}") from None
