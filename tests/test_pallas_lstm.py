"""The Pallas kernels compute what the fused loop computes; off a GPU the engine falls back.

No GPU here: the kernels run in Pallas' interpret mode, and their Triton lowering for CUDA
is checked with `jax.export`, which lowers without compiling for a device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from lstm_jax import fused, pallas_lstm, recurrence
from lstm_jax.cells import init_lstm

DIRECTIONS, TIME, BATCH, FEATURES, HIDDEN = 2, 5, 3, 4, 16
LENGTHS = jnp.array([5, 0, 2], jnp.int32)  # full, empty and padded sequences
TRITON_CALL = "__gpu$xla.gpu.triton"
# jax 0.11 warns at every lowering of the kernels (seen on an H200 with jax 0.11.2)
pytestmark = pytest.mark.filterwarnings(
    "ignore:The Pallas Triton backend is deprecated:DeprecationWarning"
)


def _core_inputs(hidden=HIDDEN):
    k_w, k_u, k_b, k_x = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "kernel": 0.4 * jax.random.normal(k_w, (DIRECTIONS, FEATURES, 4 * hidden)),
        "recurrent_kernel": 0.4 * jax.random.normal(k_u, (DIRECTIONS, hidden, 4 * hidden)),
        "bias": 0.2 * jax.random.normal(k_b, (DIRECTIONS, 4 * hidden)),
    }
    xs = jax.random.normal(k_x, (DIRECTIONS, TIME, BATCH, FEATURES))
    mask = recurrence.step_mask(LENGTHS, TIME)
    return params, xs, jnp.stack([mask, mask[::-1]])  # the second direction's scan order


def _loss(core, mask):
    """A loss that reads every output and both halves of the final carry."""

    def loss(params, xs):
        ys, (h, c) = core(params, xs, mask)
        weights = jnp.sin(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        return jnp.sum(ys * weights) + jnp.sum(jnp.sin(h) + c**2)

    return loss


def _loop(operands):
    return lambda p, x, m: fused._fused(p, x, m, 1, jnp.dtype(operands), "loop")


def _interpreted(operands):
    return lambda p, x, m: pallas_lstm.lstm_core(p, x, m, operands, interpret=True)


def _assert_trees_close(actual, expected, tol):
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(a, e, rtol=tol, atol=tol), actual, expected
    )


def test_kernels_match_the_fused_loop_in_float32():
    params, xs, mask = _core_inputs()
    _assert_trees_close(
        _interpreted(jnp.float32)(params, xs, mask), _loop(jnp.float32)(params, xs, mask), 1e-5
    )
    grads = jax.grad(_loss(_interpreted(jnp.float32), mask), argnums=(0, 1))(params, xs)
    expected = jax.grad(_loss(_loop(jnp.float32), mask), argnums=(0, 1))(params, xs)
    _assert_trees_close(grads, expected, 1e-5)


@pytest.mark.slow
def test_kernels_with_bfloat16_matmuls_stay_close_to_the_fused_loop():
    """Both round the same matmul inputs to bfloat16; they differ in summation order only."""
    params, xs, mask = _core_inputs()
    grads = jax.grad(_loss(_interpreted(jnp.bfloat16), mask), argnums=(0, 1))(params, xs)
    loop = jax.grad(_loss(_loop(jnp.bfloat16), mask), argnums=(0, 1))(params, xs)
    exact = jax.grad(_loss(_loop(jnp.float32), mask), argnums=(0, 1))(params, xs)
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(loop), strict=True)
    )
    rounding = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(loop), jax.tree.leaves(exact), strict=True)
    )
    assert diff < rounding  # closer to the bfloat16 loop than that is to float32


def _pallas_through_recurrence(monkeypatch):
    """Engine "pallas" with its kernels interpreted, as if this CPU were a GPU."""
    monkeypatch.setattr(
        recurrence,
        "_kernel",
        lambda engine, *_: "interpret" if engine == "pallas" else "loop",
    )


def _layer_params():
    k_fwd, k_bwd = jax.random.split(jax.random.PRNGKey(1))
    return {
        "forward": init_lstm(k_fwd, FEATURES, HIDDEN),
        "backward": init_lstm(k_bwd, FEATURES, HIDDEN),
    }


@pytest.mark.slow
@pytest.mark.parametrize("layer", ["bidirectional", "rnn-reverse"])
def test_pallas_engine_matches_the_fused_engine(layer, monkeypatch):
    _pallas_through_recurrence(monkeypatch)
    params = _layer_params()
    xs = jax.random.normal(jax.random.PRNGKey(2), (BATCH, TIME, FEATURES))

    def loss(engine):
        def f(params, xs):
            if layer == "bidirectional":
                ys, (fwd, bwd) = recurrence.bidirectional(
                    "lstm", params, xs, LENGTHS, engine=engine
                )
                h = fwd[0] + bwd[1]
            else:
                ys, (h, _) = recurrence.rnn(
                    "lstm", params["backward"], xs, LENGTHS, reverse=True, engine=engine
                )
            return jnp.sum(ys**2) + jnp.sum(jnp.tanh(h))

        return jax.value_and_grad(f, argnums=(0, 1))

    _assert_trees_close(loss("pallas")(params, xs), loss("fused")(params, xs), 1e-5)


def test_triton_kernels_only_up_to_the_jax_that_deprecates_their_backend(monkeypatch):
    assert pallas_lstm.triton_supported("0.10.2") and pallas_lstm.triton_supported("0.7.0")
    assert not pallas_lstm.triton_supported("0.11.0")
    assert not pallas_lstm.triton_supported("0.11.0rc1") and not pallas_lstm.triton_supported("1.0")
    monkeypatch.setattr(pallas_lstm, "on_gpu", lambda: True)  # as on a GPU
    assert recurrence._kernel("pallas", 64, 64, 64, jnp.float32) == (
        "pallas" if pallas_lstm.triton_supported() else "loop"
    )
    monkeypatch.setattr(pallas_lstm, "triton_supported", lambda: False)  # a jax from 0.11
    assert recurrence._kernel("pallas", 64, 64, 64, jnp.float32) == "loop"


@pytest.mark.skipif(pallas_lstm.on_gpu(), reason="on a GPU the engine runs the kernels")
def test_pallas_engine_falls_back_to_the_fused_loop_off_a_gpu():
    assert not pallas_lstm.on_gpu()
    kernel = recurrence._kernel("fused", 64, 64, 64, jnp.float32)  # "cpu" where it builds
    assert kernel in ("cpu", "loop")
    assert recurrence._kernel("pallas", 64, 64, 64, jnp.float32) == kernel
    params = _layer_params()
    xs = jax.random.normal(jax.random.PRNGKey(2), (BATCH, TIME, FEATURES))
    _assert_trees_close(
        recurrence.bidirectional("lstm", params, xs, LENGTHS, engine="pallas"),
        recurrence.bidirectional("lstm", params, xs, LENGTHS, engine="fused"),
        0.0,
    )


@pytest.mark.skipif(not pallas_lstm.on_gpu(), reason="compiles the kernels for a GPU")
def test_compiled_kernels_match_the_fused_loop_on_a_gpu():
    """On a GPU (`scripts/gpu_bench.sh` runs this file there): the kernels compiled by
    Triton, at the benchmark's shapes (hidden 64, batch 64, 100 steps, padded sequences),
    give the fused loop's outputs and gradients within 1e-5 in float32 (the conftest asks
    every matmul for full float32 precision, so the loop's are not rounded to TF32), and
    engine "pallas" runs them where this jax has not deprecated Triton (they are compiled
    and checked either way)."""
    expected = "pallas" if pallas_lstm.triton_supported() else "loop"
    assert recurrence._kernel("pallas", 64, 64, 64, jnp.float32) == expected
    params, xs, _ = _core_inputs(hidden=64)
    # Weights at about the models' initial scale: at the small tests' 4x larger one, 100
    # steps amplify rounding past 1e-5 even between the interpreted kernels and the loop.
    params = jax.tree.map(lambda p: p / 4, params)
    xs = jnp.tile(xs, (1, 20, 22, 1))[:, :100, :64]  # [D, 100, 64, FEATURES]
    lengths = jax.random.randint(jax.random.PRNGKey(3), (64,), 0, 101)
    mask = recurrence.step_mask(lengths, 100)
    mask = jnp.stack([mask, mask[::-1]])
    kernels = jax.jit(lambda p, x, m: pallas_lstm.lstm_core(p, x, m, jnp.float32))
    loop = jax.jit(_loop(jnp.float32))
    _assert_trees_close(kernels(params, xs, mask), loop(params, xs, mask), 1e-5)
    grads = jax.jit(jax.grad(_loss(kernels, mask), argnums=(0, 1)))(params, xs)
    expected = jax.jit(jax.grad(_loss(loop, mask), argnums=(0, 1)))(params, xs)
    _assert_trees_close(grads, expected, 1e-5)


def test_kernels_take_the_hidden_sizes_that_fit_on_chip(monkeypatch):
    sizes = (4, 8, 16, 24, 32, 64, 96, 128, 256)
    assert [h for h in sizes if pallas_lstm.supported(h)] == [16, 32, 64]
    assert [h for h in sizes if pallas_lstm.supported(h, jnp.float32, jnp.bfloat16)] == [
        16,
        32,
        64,
        128,
    ]
    assert not pallas_lstm.supported(64, jnp.bfloat16)  # the kernels take float32 inputs
    monkeypatch.setattr(pallas_lstm, "on_gpu", lambda: True)  # as on a GPU, with a jax
    monkeypatch.setattr(pallas_lstm, "triton_supported", lambda: True)  # that runs them
    assert recurrence._kernel("pallas", 64, 64, 64, jnp.float32) == "pallas"
    assert recurrence._kernel("pallas", 64, 128, 64, jnp.float32, "float32") == "loop"  # too big
    assert recurrence._kernel("pallas", 64, 128, 64, jnp.float32, "bfloat16") == "pallas"
    params, xs, mask = _core_inputs(hidden=24)
    with pytest.raises(ValueError, match="power of two"):
        pallas_lstm.lstm_core(params, xs, mask, jnp.float32, interpret=True)
    params, xs, mask = _core_inputs(hidden=128)
    with pytest.raises(ValueError, match=r"up to 64 \(float32\), 128 \(bfloat16\)"):
        pallas_lstm.lstm_core(params, xs, mask, jnp.float32, interpret=True)
    with pytest.raises(ValueError, match="unknown kernel"):
        fused.lstm_layer_tm(jax.tree.map(lambda p: p[0], params), xs[0], mask[0], kernel="cudnn")


@pytest.mark.parametrize("operands", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_kernels_lower_to_triton_for_cuda(operands):
    """Pallas' Triton lowering accepts both kernels (the forward and the backward one) at the
    benchmark's shapes: hidden 64, batch 64, a time length that is no power of two. What
    this cannot check is Triton's compilation for the device, nor the speed."""
    params, xs, mask = _core_inputs(hidden=64)
    xs = jnp.tile(xs, (1, 20, 22, 1))[:, :100, :64]  # [D, 100, 64, FEATURES]
    mask = jnp.ones(xs.shape[:3], bool)
    grad = jax.jit(
        jax.grad(
            _loss(lambda p, x, m: pallas_lstm.lstm_core(p, x, m, operands), mask), argnums=(0, 1)
        )
    )
    with jax.default_matmul_precision("default"):  # not the tests' "highest" (conftest)
        exported = export.export(
            grad,
            platforms=["cuda"],
            disabled_checks=[export.DisabledSafetyCheck.custom_call(TRITON_CALL)],
        )(params, xs)
    module = exported.mlir_module()
    assert module.count(TRITON_CALL) == 2
    assert module.count("num_warps = 8") == 2  # `_compiler` at hidden 64
    # float32 matmuls ask for full precision (a GPU would round their inputs to TF32)
    assert ("HIGHEST" in module) == (operands == jnp.float32)
