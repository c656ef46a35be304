"""The fused engine's native CPU loops (`lstm_jax.cpu_kernel`): the same outputs and
gradients as its `lax` loops, on the layers it takes; the others keep the `lax` loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import cells, cpu_kernel, fused, recurrence

NATIVE = cpu_kernel.takes(8, 16, 1, jnp.float32)
needs_native = pytest.mark.skipif(
    not NATIVE, reason="no C++ compiler or AVX-512 here: the native loops do not run"
)


def _layer(key, features, hidden, directions):
    keys = jax.random.split(key, directions)
    return [cells.init_lstm(k, features, hidden) for k in keys]


def _run(kernel, params, xs_TBE, mask_TB):
    """Outputs and final carries of a fused layer (both directions when two params)."""
    if len(params) == 1:
        return fused.lstm_layer_tm(params[0], xs_TBE, mask_TB, kernel=kernel)
    return fused.lstm_bidirectional_tm(*params, xs_TBE, mask_TB, kernel=kernel)


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    ("directions", "time", "batch", "features", "hidden"),
    [(1, 7, 5, 3, 16), (2, 4, 2, 24, 32), (2, 1, 1, 8, 16), (2, 3, 37, 5, 16), (1, 5, 9, 40, 80)],
)
def test_native_loops_match_the_lax_loops(
    monkeypatch, threads, directions, time, batch, features, hidden
):
    monkeypatch.setattr(cpu_kernel, "_threads", lambda: threads)
    k_params, k_x, k_len, k_w = jax.random.split(jax.random.PRNGKey(threads), 4)
    params = _layer(k_params, features, hidden, directions)
    xs = jax.random.normal(k_x, (time, batch, features))
    lengths = jax.random.randint(k_len, (batch,), 0, time + 1).at[0].set(time)  # some 0s
    mask = jnp.arange(time)[:, None] < lengths[None, :]
    weights = jax.random.normal(k_w, (time, batch, directions * hidden))

    def loss(kernel, params, xs):
        *ys, carries = _run(kernel, params, xs, mask)
        h_c = jax.tree.leaves(carries)
        ys = jnp.concatenate(ys, axis=-1)
        return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(a)) for a in h_c)

    def value_and_grads(kernel):
        return jax.jit(jax.value_and_grad(lambda p, x: loss(kernel, p, x), (0, 1)))(params, xs)

    expected, got = value_and_grads("loop"), value_and_grads("cpu")
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        scale = max(1.0, float(np.abs(e).max()))  # summation order differs between the two
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6 * scale)


@needs_native
def test_fused_engine_runs_the_native_loops_where_they_fit(monkeypatch):
    monkeypatch.setattr(cpu_kernel, "_threads", lambda: 2)
    assert recurrence._kernel("fused", 64, 64, 1, jnp.float32) == "cpu"
    assert recurrence._kernel("fused", 64, 24, 64, jnp.float32) == "loop"  # not a multiple of 16
    assert recurrence._kernel("fused", 64, 64, 64, jnp.float32, "bfloat16") == "loop"
    # 8 MiB of weights: with a block of 4 sequences a thread, not with one
    assert recurrence._kernel("fused", 512, 512, 8, jnp.float32) == "cpu"
    assert recurrence._kernel("fused", 512, 512, 2, jnp.float32) == "loop"
    params = {"forward": cells.init_lstm(jax.random.PRNGKey(0), 4, 16)}
    params["backward"] = cells.init_lstm(jax.random.PRNGKey(1), 4, 16)
    xs = jax.random.normal(jax.random.PRNGKey(2), (3, 5, 4))
    lowered = jax.jit(lambda p: recurrence.bidirectional("lstm", p, xs, jnp.array([5, 2, 0])))
    assert "lstm_forward" in lowered.lower(params).as_text()


@needs_native
def test_the_switch_turns_the_native_loops_off(monkeypatch):
    monkeypatch.setenv(cpu_kernel.ENV_SWITCH, "0")
    assert recurrence._kernel("fused", 64, 64, 64, jnp.float32) == "loop"


def test_native_kernel_refuses_a_layer_it_does_not_take():
    params = cells.init_lstm(jax.random.PRNGKey(0), 4, 24)
    xs, mask = jnp.ones((3, 2, 4)), jnp.ones((3, 2), bool)
    with pytest.raises(ValueError, match="native CPU loops do not run this layer"):
        fused.lstm_layer_tm(params, xs, mask, kernel="cpu")


def test_a_failed_build_says_what_the_compiler_said(tmp_path):
    with pytest.raises(RuntimeError):
        cpu_kernel._build("false", tmp_path / "lstm_cpu.so")
    assert not (tmp_path / "lstm_cpu.so").exists()


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
def test_weight_grad_is_the_matmul(monkeypatch, threads):
    """Over several chunks of rows (1,000 > 512), a narrower last panel (80 columns) and a
    row count that is not a multiple of 4."""
    monkeypatch.setattr(cpu_kernel, "_threads", lambda: threads)
    k_a, k_b = jax.random.split(jax.random.PRNGKey(threads))
    xh = jax.random.normal(k_a, (2, 21, 1000))
    dz = jax.random.normal(k_b, (2, 1000, 80))
    expected = np.einsum("dmk,dkn->dmn", np.asarray(xh, np.float64), np.asarray(dz, np.float64))
    got = jax.jit(cpu_kernel.weight_grad)(xh, dz)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert cpu_kernel.weight_grad_fits(64, 64) and not cpu_kernel.weight_grad_fits(512, 512)
    empty = jax.jit(cpu_kernel.weight_grad)(jnp.ones((2, 21, 0)), jnp.ones((2, 0, 80)))
    np.testing.assert_array_equal(empty, np.zeros((2, 21, 80)))  # written, not left as found
