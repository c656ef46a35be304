"""The recurrence: scan against plain loops, exact masking, directions, stacking, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import cells, pallas_lstm, recurrence

B, T, E, H = 3, 6, 3, 4
# Off a GPU engine "pallas" runs the fused engine's code (tests/test_pallas_lstm.py).
ENGINES = [e for e in recurrence.ENGINES if e != "pallas" or pallas_lstm.on_gpu()]
LENGTHS = np.array([6, 2, 0], np.int32)


def _setup(name="lstm", seed=0):
    spec = cells.get_cell(name)
    k_p, k_x = jax.random.split(jax.random.key(seed))
    return spec, spec.init(k_p, E, H), jax.random.normal(k_x, (B, T, E))


def _loop(spec, params, x_TE, reverse=False):
    """Plain Python loop over one sequence's real steps: the reference."""
    carry = spec.zero_carry(1, H)
    steps = range(len(x_TE) - 1, -1, -1) if reverse else range(len(x_TE))
    ys = np.zeros((len(x_TE), H), np.float32)
    for t in steps:
        carry, y = spec.step(params, carry, x_TE[t][None])
        ys[t] = y[0]
    return ys, carry


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", sorted(cells.CELLS))
@pytest.mark.parametrize("reverse", [False, True])
def test_each_engine_matches_a_plain_loop_per_sequence(name, reverse, engine):
    spec, params, xs = _setup(name)
    ys, carry = recurrence.rnn(name, params, xs, LENGTHS, reverse=reverse, engine=engine)
    for b, n in enumerate(LENGTHS):
        ys_ref, carry_ref = _loop(spec, params, xs[b, :n], reverse)
        np.testing.assert_allclose(ys[b, :n], ys_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ys[b, n:], 0.0)  # padded steps emit zeros
        for got, ref in zip(jax.tree.leaves(carry), jax.tree.leaves(carry_ref), strict=True):
            np.testing.assert_allclose(got[b], ref[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", sorted(cells.CELLS))
def test_bidirectional_matches_plain_loops_per_sequence(name, engine):
    """Each sequence alone, forward and reversed over its real steps only: the outputs of
    both halves and both final carries, for every cell on every engine."""
    spec, _, xs = _setup(name)
    params = {
        "forward": spec.init(jax.random.key(1), E, H),
        "backward": spec.init(jax.random.key(2), E, H),
    }
    ys, (carry_fwd, carry_bwd) = recurrence.bidirectional(name, params, xs, LENGTHS, engine=engine)
    assert ys.shape == (B, T, 2 * H)
    for b, n in enumerate(LENGTHS):
        fwd, fwd_carry = _loop(spec, params["forward"], xs[b, :n])
        bwd, bwd_carry = _loop(spec, params["backward"], xs[b, :n], reverse=True)
        np.testing.assert_allclose(ys[b, :n, :H], fwd, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ys[b, :n, H:], bwd, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ys[b, n:], 0.0)
        for got, ref in (
            *zip(jax.tree.leaves(carry_fwd), jax.tree.leaves(fwd_carry), strict=True),
            *zip(jax.tree.leaves(carry_bwd), jax.tree.leaves(bwd_carry), strict=True),
        ):
            np.testing.assert_allclose(got[b], ref[0], rtol=1e-5, atol=1e-6)


def test_zero_length_keeps_the_initial_carry():
    _, params, xs = _setup()
    _, (h, c) = recurrence.rnn("lstm", params, xs, LENGTHS)
    np.testing.assert_array_equal(h[2], 0.0)
    np.testing.assert_array_equal(c[2], 0.0)


def test_padding_values_do_not_leak_into_outputs():
    _, params, xs = _setup()
    noisy = xs + 100.0 * (jnp.arange(T)[None, :, None] >= LENGTHS[:, None, None])
    for reverse in (False, True):
        a = recurrence.rnn("lstm", params, xs, LENGTHS, reverse=reverse)
        b = recurrence.rnn("lstm", params, noisy, LENGTHS, reverse=reverse)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)


def test_extra_padding_leaves_results_unchanged():
    _, params, xs = _setup()
    longer = jnp.pad(xs, ((0, 0), (0, 50), (0, 0)), constant_values=3.0)
    for reverse in (False, True):
        ys, carry = recurrence.rnn("lstm", params, xs, LENGTHS, reverse=reverse)
        ys_long, carry_long = recurrence.rnn("lstm", params, longer, LENGTHS, reverse=reverse)
        np.testing.assert_allclose(ys_long[:, :T], ys, atol=1e-6)
        np.testing.assert_array_equal(ys_long[:, T:], 0.0)
        np.testing.assert_allclose(carry_long[0], carry[0], atol=1e-6)


def test_stack_follows_return_sequences():
    spec, _, xs = _setup()
    layers = [
        {
            "forward": spec.init(jax.random.key(1), E, H),
            "backward": spec.init(jax.random.key(2), E, H),
        },
        {
            "forward": spec.init(jax.random.key(3), 2 * H, 2),
            "backward": spec.init(jax.random.key(4), 2 * H, 2),
        },
    ]
    seqs = recurrence.stack("lstm", layers, xs, LENGTHS, return_sequences=True)
    final = recurrence.stack("lstm", layers, xs, LENGTHS)
    assert seqs.shape == (B, T, 4) and final.shape == (B, 4)
    for b, n in enumerate(LENGTHS[:2]):  # forward half at the last real step, backward at 0
        np.testing.assert_allclose(final[b, :2], seqs[b, n - 1, :2], atol=1e-6)
        np.testing.assert_allclose(final[b, 2:], seqs[b, 0, 2:], atol=1e-6)
    both = recurrence.stack("lstm", layers, xs, LENGTHS, return_sequences=True, return_state=True)
    np.testing.assert_array_equal(both[0], seqs)
    np.testing.assert_array_equal(both[1], final)


def test_jitted_layer_compiles_once_per_shape():
    _, params, xs = _setup()
    traces = []

    @jax.jit
    def layer(params, xs, lengths):
        traces.append(xs.shape)
        return recurrence.rnn("lstm", params, xs, lengths)[0]

    for lengths in ([1, 2, 3], [6, 0, 4], [5, 5, 5]):
        layer(params, xs, jnp.array(lengths, jnp.int32))
    layer(params, xs[:, :4], jnp.array([1, 2, 3], jnp.int32))
    layer(params, xs[:, :4], jnp.array([4, 4, 0], jnp.int32))
    assert traces == [(B, T, E), (B, 4, E)]


@pytest.mark.parametrize(
    ("xs_shape", "lengths", "message"),
    [
        ((B, T, E), [7, 1, 1], r"lengths must lie in \[0, time=6\]"),
        ((B, T, E), [-1, 1, 1], r"lengths must lie in \[0, time=6\]"),
        ((B, T, E), [1, 1], r"lengths must be \[batch\] = \[3\]"),
        ((T, E), [1], r"inputs must be \[batch, time, features\]"),
        ((B, T, E), [1.0, 2.0, 3.0], "lengths must be integers"),
    ],
)
def test_bad_input_raises_clear_error(xs_shape, lengths, message):
    _, params, _ = _setup()
    with pytest.raises(ValueError, match=message):
        recurrence.rnn("lstm", params, jnp.zeros(xs_shape), np.asarray(lengths))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            cells.init_lstm(jax.random.key(0), E + 1, H),
            r"'kernel': \(3, 16\).*got .*'kernel': \(4, 16\)",
        ),
        (cells.init_gru(jax.random.key(0), E, H), "'recurrent_bias': "),
    ],
)
def test_params_of_another_shape_or_cell_are_named(engine, params, message):
    with pytest.raises(ValueError, match=f"params do not fit the 'lstm' cell.*{message}"):
        recurrence.rnn("lstm", params, jnp.zeros((B, T, E)), LENGTHS, engine=engine)
    both = {"forward": params, "backward": params}
    with pytest.raises(ValueError, match="params do not fit"):
        recurrence.bidirectional("lstm", both, jnp.zeros((B, T, E)), LENGTHS, engine=engine)


def test_fused_directions_of_two_hidden_sizes_are_refused_and_scan_takes_them():
    both = {"forward": _setup()[1], "backward": cells.init_lstm(jax.random.key(1), E, H + 2)}
    with pytest.raises(ValueError, match=r'one hidden size.*use engine="scan"'):
        recurrence.bidirectional("lstm", both, jnp.zeros((B, T, E)), LENGTHS)
    ys, _ = recurrence.bidirectional("lstm", both, jnp.zeros((B, T, E)), LENGTHS, engine="scan")
    assert ys.shape == (B, T, 2 * H + 2)


def test_lengths_beyond_time_under_jit_act_as_time():
    _, params, xs = _setup()
    run = jax.jit(lambda lengths: recurrence.rnn("lstm", params, xs, lengths))
    long = run(jnp.array([99, 99, 99], jnp.int32))
    full = run(jnp.array([T, T, T], jnp.int32))
    np.testing.assert_array_equal(long[0], full[0])


def test_backprop_through_time_reaches_the_first_step():
    _, params, xs = _setup()

    def last_output(xs):
        return recurrence.rnn("lstm", params, xs, LENGTHS)[1][0][0].sum()

    grad = jax.grad(last_output)(xs)
    assert np.abs(grad[0, 0]).sum() > 0  # step 0 influences the final state
    np.testing.assert_array_equal(grad[1, 2:], 0.0)  # padding gets no gradient


def test_remat_engine_gives_the_same_gradients_as_the_scan():
    _, params, xs = _setup()

    def loss(params, xs, engine):
        ys, (h, _) = recurrence.rnn("lstm", params, xs, LENGTHS, engine=engine)
        return jnp.sum(ys**2) + jnp.sum(h)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    for a, b in zip(
        jax.tree.leaves(grad(params, xs, "remat")),
        jax.tree.leaves(grad(params, xs, "scan")),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
