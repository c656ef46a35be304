"""Cells: equations against independent NumPy references, gradients against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from lstm_jax import cells

B, E, H = 2, 3, 4


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _inputs(name, seed=0):
    spec = cells.get_cell(name)
    k_params, k_x, k_h = jax.random.split(jax.random.key(seed), 3)
    params = spec.init(k_params, E, H)
    # Non-zero biases so that the bias path is exercised too.
    params = {
        k: v + 0.1 * jnp.arange(v.size, dtype=v.dtype).reshape(v.shape) / v.size
        if k.endswith("bias")
        else v
        for k, v in params.items()
    }
    x = jax.random.normal(k_x, (B, E))
    parts = jax.random.normal(k_h, (spec.carry_parts, B, H))
    carry = parts[0] if spec.carry_parts == 1 else tuple(parts)
    return spec, params, carry, x


def test_lstm_matches_numpy_reference():
    _, p, (h, c), x = _inputs("lstm")
    p, h, c, x = jax.tree.map(np.asarray, (p, h, c, x))
    z = x @ p["kernel"] + h @ p["recurrent_kernel"] + p["bias"]
    i, f, g, o = (z[:, k * H : (k + 1) * H] for k in range(4))
    c_ref = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h_ref = _sigmoid(o) * np.tanh(c_ref)
    (h_new, c_new), y = cells.lstm_cell(p, (h, c), x)
    np.testing.assert_allclose(c_new, c_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_new, h_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y, h_new)


def test_carry_lstm_matches_its_equations():
    _, p, (s, c), x = _inputs("carry_lstm")
    p, s, c, x = jax.tree.map(np.asarray, (p, s, c, x))
    W, U, b = p["kernel"], p["recurrent_kernel"], p["bias"]
    part = lambda m, k: m[..., k * H : (k + 1) * H]  # noqa: E731
    out = np.tanh(s @ part(U, 0) + x @ part(W, 0) + c @ p["carry_kernel"] + part(b, 0))
    i = _sigmoid(s @ part(U, 1) + x @ part(W, 1) + part(b, 1))
    f = _sigmoid(s @ part(U, 2) + x @ part(W, 2) + part(b, 2))
    k = np.tanh(s @ part(U, 3) + x @ part(W, 3) + part(b, 3))
    (s_new, c_new), y = cells.carry_lstm_cell(p, (s, c), x)
    np.testing.assert_allclose(c_new, i * k + c * f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_new, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y, s_new)


def test_gru_matches_numpy_reference():
    _, p, h, x = _inputs("gru")
    p, h, x = jax.tree.map(np.asarray, (p, h, x))
    xz = x @ p["kernel"] + p["bias"]
    hz = h @ p["recurrent_kernel"] + p["recurrent_bias"]
    z = _sigmoid(xz[:, :H] + hz[:, :H])
    r = _sigmoid(xz[:, H : 2 * H] + hz[:, H : 2 * H])
    n = np.tanh(xz[:, 2 * H :] + r * hz[:, 2 * H :])
    h_new, _ = cells.gru_cell(p, h, x)
    np.testing.assert_allclose(h_new, z * h + (1 - z) * n, rtol=1e-5, atol=1e-6)


def test_simple_rnn_matches_numpy_reference():
    _, p, h, x = _inputs("simple_rnn")
    p, h, x = jax.tree.map(np.asarray, (p, h, x))
    ref = np.tanh(x @ p["kernel"] + h @ p["recurrent_kernel"] + p["bias"])
    np.testing.assert_allclose(cells.simple_rnn_cell(p, h, x)[0], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(cells.CELLS))
def test_cell_gradients_match_finite_differences(name):
    spec, params, carry, x = _inputs(name)
    check_grads(spec.step, (params, carry, x), order=2, modes=["fwd", "rev"], atol=1e-2)


def test_lstm_init_is_keras_default():
    p = cells.init_lstm(jax.random.key(0), 5, 3)
    assert p["kernel"].shape == (5, 12) and p["recurrent_kernel"].shape == (3, 12)
    np.testing.assert_array_equal(p["bias"], [0] * 3 + [1] * 3 + [0] * 6)
    limit = np.sqrt(6 / (5 + 12))
    assert np.abs(p["kernel"]).max() <= limit
    u = np.asarray(p["recurrent_kernel"])
    np.testing.assert_allclose(u @ u.T, np.eye(3), atol=1e-5)  # orthogonal rows


def test_unknown_cell_name_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        cells.get_cell("lstmm")


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        cells.init_lstm(jax.random.key(0), 3, 0)
