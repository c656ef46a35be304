"""The fused LSTM engine computes what the generic masked scan computes, values and grads."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_directional_derivatives, cpu_only

from lstm_jax import fused, recurrence
from lstm_jax.cells import init_lstm

BATCH, TIME, FEATURES, HIDDEN = 3, 6, 5, 4
LENGTHS = jnp.array([6, 0, 3], jnp.int32)  # full, empty and padded sequences


def _inputs(seed=0):
    k_fwd, k_bwd, k_x, k_w = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = {
        "forward": init_lstm(k_fwd, FEATURES, HIDDEN),
        "backward": init_lstm(k_bwd, FEATURES, HIDDEN),
    }
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(k_w, p.shape), params)
    xs = jax.random.normal(k_x, (BATCH, TIME, FEATURES))
    return params, xs


def _loss(layer):
    """A loss that reads every output and both halves of every final carry."""
    weights = jax.random.normal(jax.random.PRNGKey(7), (BATCH, TIME, 2 * HIDDEN))

    def loss(params, xs):
        ys, (carry_fwd, carry_bwd) = layer(params, xs)
        return (
            jnp.sum(ys * weights)
            + jnp.sum(jnp.sin(carry_fwd[0]) + carry_fwd[1] ** 2)
            + jnp.sum(carry_bwd[0] * jnp.cos(carry_bwd[1]))
        )

    return loss


def _bidirectional(engine):
    return lambda params, xs: recurrence.bidirectional("lstm", params, xs, LENGTHS, engine=engine)


def _two_rnns(engine):
    def layer(params, xs):
        ys_fwd, carry_fwd = recurrence.rnn("lstm", params["forward"], xs, LENGTHS, engine=engine)
        ys_bwd, carry_bwd = recurrence.rnn(
            "lstm", params["backward"], xs, LENGTHS, reverse=True, engine=engine
        )
        return jnp.concatenate([ys_fwd, ys_bwd], axis=-1), (carry_fwd, carry_bwd)

    return layer


def _assert_trees_close(actual, expected):
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5), actual, expected
    )


@pytest.mark.parametrize("layer", [_bidirectional, _two_rnns], ids=["bidirectional", "rnn"])
def test_fused_gradients_match_generic_scan(layer):
    params, xs = _inputs()
    grad = jax.jit(jax.grad(_loss(layer("fused")), argnums=(0, 1)))
    grad_ref = jax.jit(jax.grad(_loss(layer("scan")), argnums=(0, 1)))
    _assert_trees_close(grad(params, xs), grad_ref(params, xs))


@pytest.mark.parametrize("layer", [_bidirectional, _two_rnns], ids=["bidirectional", "rnn"])
def test_fused_gradients_when_only_the_final_hidden_state_is_read(layer):
    """The classifier's case: the outputs and the cell state get symbolic-zero cotangents,
    which the backward pass skips."""
    params, xs = _inputs()

    def loss(engine):
        def f(params, xs):
            _, (carry_fwd, carry_bwd) = layer(engine)(params, xs)
            return jnp.sum(jnp.tanh(carry_fwd[0]) * carry_bwd[0])

        return jax.jit(jax.grad(f, argnums=(0, 1)))

    _assert_trees_close(loss("fused")(params, xs), loss("scan")(params, xs))


def test_fused_padding_is_ignored():
    params, xs = _inputs()
    noisy = jnp.where(jnp.arange(TIME)[None, :, None] < LENGTHS[:, None, None], xs, 1e3)
    layer = _bidirectional("fused")
    _assert_trees_close(layer(params, noisy), layer(params, xs))
    grads = jax.grad(_loss(layer), argnums=1)(params, xs)
    assert float(jnp.abs(grads[1]).max()) == 0.0  # the empty sequence gets no gradient


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize("matmul_dtype", [None, "bfloat16"])
@pytest.mark.parametrize(("batch", "time"), [(2, 0), (0, 5)])
def test_fused_layer_takes_an_empty_batch_or_time_axis(
    monkeypatch, native, matmul_dtype, batch, time
):
    """No steps or no sequences: empty outputs, zero carries and zero gradients, on the
    native loops and on the `lax` ones."""
    monkeypatch.setenv("LSTM_JAX_NATIVE", native)
    params, _ = _inputs()
    xs, lengths = jnp.ones((batch, time, FEATURES)), jnp.zeros((batch,), jnp.int32)

    def layer(params):
        return recurrence.bidirectional("lstm", params, xs, lengths, matmul_dtype=matmul_dtype)

    ys, carries = layer(params)
    assert ys.shape == (batch, time, 2 * HIDDEN)
    assert all(float(jnp.abs(a).sum()) == 0.0 for a in jax.tree.leaves(carries))
    grads = jax.grad(lambda p: sum(jnp.sum(a) for a in jax.tree.leaves(layer(p)[1])))(params)
    assert all(float(jnp.abs(g).sum()) == 0.0 for g in jax.tree.leaves(grads))


def test_fused_layer_gradients_match_finite_differences_in_float64():
    """Every parameter array's and the inputs' directional derivative against central
    differences, in float64 with a small step, through a loss that reads the outputs and
    both halves of both final carries (the cell state included): the hand-written backward
    pass, checked without the scan it is compared with elsewhere."""
    with jax.enable_x64(True):
        params, xs = jax.tree.map(lambda a: np.asarray(a, np.float64), _inputs())
        loss = _loss(_bidirectional("fused"))
        assert_directional_derivatives(loss, (params, xs))


def test_fused_layer_compiles_once_per_shape():
    params, xs = _inputs()
    layer = jax.jit(
        jax.grad(
            lambda p, x, n: _loss(
                lambda p, x: recurrence.bidirectional("lstm", p, x, n, engine="fused")
            )(p, x)
        )
    )
    layer(params, xs, LENGTHS)
    layer(params, xs + 1.0, jnp.array([2, 5, 1], jnp.int32))
    assert layer._cache_size() == 1


def test_unknown_engine_is_an_error():
    params, xs = _inputs()
    with pytest.raises(ValueError, match="unknown engine"):
        recurrence.bidirectional("lstm", params, xs, LENGTHS, engine="cudnn")


@pytest.mark.parametrize("layer", ["bidirectional", "rnn"])
def test_bfloat16_matmuls_stay_close_to_float32(layer):
    """bfloat16 matmul inputs round the outputs and gradients by about 2^-8 relative,
    and no more: the state and the accumulation stay float32."""
    params, xs = _inputs()

    def run(matmul_dtype):
        if layer == "bidirectional":
            return lambda p, x: recurrence.bidirectional(
                "lstm", p, x, LENGTHS, matmul_dtype=matmul_dtype
            )

        def two(p, x):
            kw = dict(matmul_dtype=matmul_dtype)
            ys_f, carry_f = recurrence.rnn("lstm", p["forward"], x, LENGTHS, **kw)
            ys_b, carry_b = recurrence.rnn("lstm", p["backward"], x, LENGTHS, reverse=True, **kw)
            return jnp.concatenate([ys_f, ys_b], axis=-1), (carry_f, carry_b)

        return two

    for fn in (lambda f: f, lambda f: jax.grad(_loss(f), argnums=(0, 1))):
        low = jax.tree.leaves(jax.jit(fn(run("bfloat16")))(params, xs))
        ref = jax.tree.leaves(jax.jit(fn(run(None)))(params, xs))
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(low, ref, strict=True))
        scale = max(float(jnp.max(jnp.abs(b))) for b in ref)
        assert 0.0 < diff < 2e-2 * scale  # rounded (so bfloat16 ran), but only slightly


def test_bfloat16_matmuls_round_the_outputs_not_the_final_carry():
    """The outputs come back as the bfloat16 values the next layer's matmul takes (the
    forward pass stores them so); the final carry, which the classifier's head reads,
    is float32."""
    params, xs = _inputs()
    ys, (carry_fwd, _) = recurrence.bidirectional(
        "lstm", params, xs, LENGTHS, matmul_dtype="bfloat16"
    )
    np.testing.assert_array_equal(ys, ys.astype(jnp.bfloat16).astype(ys.dtype))
    h_last = ys[jnp.arange(BATCH), jnp.maximum(LENGTHS - 1, 0), :HIDDEN]  # forward half
    real = LENGTHS > 0
    np.testing.assert_array_equal(
        h_last[real], carry_fwd[0][real].astype(jnp.bfloat16).astype(ys.dtype)
    )
    assert bool(jnp.any(carry_fwd[0][real] != h_last[real]))  # the carry is not rounded


def _dot_operand_dtypes(compiled_hlo: str) -> list[tuple[str, str]]:
    """The element types of both operands of every dot in an optimised HLO module."""
    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", compiled_hlo))
    dots = re.findall(r" dot\(%([\w.\-]+), %([\w.\-]+)\)", compiled_hlo)
    return [(types[a], types[b]) for a, b in dots]


@cpu_only
def test_bfloat16_matmuls_stay_bfloat16_in_the_compiled_gradient():
    """Every matmul of the fused layer's forward and backward pass keeps bfloat16 inputs
    after XLA's optimisation; XLA on CPU once turned `dz W^T` into a float32 matmul
    (on inputs rounded to bfloat16), at the float32 rate, for the way it was written."""
    params, xs = _inputs()
    grad = jax.jit(
        jax.grad(
            _loss(
                lambda p, x: recurrence.bidirectional(
                    "lstm", p, x, LENGTHS, matmul_dtype="bfloat16"
                )
            ),
            argnums=(0, 1),
        )
    )
    operands = _dot_operand_dtypes(grad.lower(params, xs).compile().as_text())
    # forward step, backward step, weight gradients, input gradients
    assert len(operands) >= 4
    assert all(pair == ("bf16", "bf16") for pair in operands), operands


@pytest.mark.parametrize("widths", [(128, 32), (64, 64), (3, 5)])
def test_joined_is_the_concatenation_cast(widths):
    parts = [jax.random.normal(jax.random.PRNGKey(w), (2, 3, w)) for w in widths]
    for operands in (jnp.bfloat16, jnp.float32):
        np.testing.assert_array_equal(
            fused._joined(parts, operands),
            jnp.concatenate(parts, axis=-1).astype(operands),
        )


@pytest.mark.parametrize("operands", [jnp.bfloat16, jnp.float32])
def test_stored_gate_grads_are_the_concatenation_at_step_t(operands):
    """The backward step's `dz`, written gate by gate (16-bit) or concatenated (float32):
    the same values as `concatenate(parts).astype(operands)`, at step t and nowhere else."""
    parts = [jax.random.normal(jax.random.PRNGKey(k), (2, 3, 16)) for k in range(4)]
    before = jax.random.randint(jax.random.PRNGKey(9), (2, 5, 3, 64), 0, 2**15)
    before = before.astype(fused._bits(operands))
    dz_all, dz = fused._stored_gate_grads(before, parts, jnp.int32(2), operands)
    expected = jnp.concatenate(parts, axis=-1).astype(operands)
    np.testing.assert_array_equal(dz, expected)
    np.testing.assert_array_equal(jax.lax.bitcast_convert_type(dz_all[:, 2], operands), expected)
    others = np.array([0, 1, 3, 4])
    np.testing.assert_array_equal(dz_all[:, others], before[:, others])


def _loop_bodies(compiled_hlo: str) -> list[str]:
    """The text of every while loop's body computation in an optimised HLO module."""
    names = re.findall(r" while\(.*?body=%([\w.\-]+)", compiled_hlo)
    return [
        re.search(rf"^%{re.escape(name)} .*?^}}", compiled_hlo, re.M | re.S).group(0)
        for name in names
    ]


@cpu_only
def test_bfloat16_loop_steps_join_their_matmul_inputs_inside_a_fusion():
    """With bfloat16 matmuls, neither loop runs a concatenation as an op of its own: XLA
    on CPU never fuses one along the minor axis, and the forward step's `[x_t, h]` and
    the backward step's `dz` then took three and six ops where one does (`_joined`;
    the backward step now writes `dz` part by part, `_stored_gate_grads`)."""
    features, hidden, lengths = 48, 64, jnp.array([4, 2], jnp.int32)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "forward": init_lstm(keys[0], features, hidden),
        "backward": init_lstm(keys[1], features, hidden),
    }
    xs = jax.random.normal(keys[2], (2, 4, features))
    grad = jax.jit(
        jax.grad(
            lambda p, x: jnp.sum(
                recurrence.bidirectional("lstm", p, x, lengths, matmul_dtype="bfloat16")[0]
            ),
            argnums=(0, 1),
        )
    )
    bodies = _loop_bodies(grad.lower(params, xs).compile().as_text())
    assert len(bodies) == 2  # the forward and the backward loop
    for body in bodies:
        assert " concatenate(" not in body  # outside a fusion's computation
        assert "fusion(" in body


def _constant_sizes(compiled_hlo: str) -> list[int]:
    """The element count of every array constant in an optimised HLO module."""
    shapes = re.findall(r" = \w+\[([\d,]+)\]\S* constant\(", compiled_hlo)
    return [int(np.prod([int(d) for d in shape.split(",")])) for shape in shapes]


@cpu_only
def test_compiled_gradient_holds_no_sequence_sized_constant():
    """The forward pass sets the weight gradients' row of ones after its loop. Set on the
    zeros before it, XLA folded the whole initial `[D, E + H + 1, time, batch]` array
    into a constant: held by the executable of every compiled shape (the IMDB benchmark's
    worker, 12 shapes, peaked 342 MB higher) and copied out of in every step."""
    params, xs = _inputs()
    xs = jnp.tile(xs, (1, 8, 1))  # time 48
    lengths = jnp.array([48, 0, 20], jnp.int32)
    grad = jax.jit(
        jax.grad(
            lambda p, x: jnp.sum(recurrence.bidirectional("lstm", p, x, lengths)[0] ** 2),
            argnums=(0, 1),
        )
    )
    sizes = _constant_sizes(grad.lower(params, xs).compile().as_text())
    assert sizes  # the gates' slopes at least
    assert max(sizes) < xs.shape[0] * xs.shape[1], sizes


def test_bfloat16_matmuls_need_the_fused_engine():
    params, xs = _inputs()
    with pytest.raises(ValueError, match="needs a fused engine"):
        recurrence.bidirectional(
            "lstm", params, xs, LENGTHS, engine="scan", matmul_dtype="bfloat16"
        )
    with pytest.raises(ValueError, match="unknown matmul_dtype"):
        recurrence.bidirectional("lstm", params, xs, LENGTHS, matmul_dtype="float16")
