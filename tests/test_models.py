"""The seed's classifiers: parameter counts, padding invariance, gradients, summary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_directional_derivatives

from lstm_jax import SentimentClassifier
from lstm_jax.cli import main
from lstm_jax.models import PoolOverTime
from lstm_jax.summary import layer_rows, summary


def _params(model, tokens, lengths, seed=0):
    return model.init(jax.random.key(seed), tokens, lengths)["params"]


def _batch(vocab=50, batch=3, time=7, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([time, 3, 1][:batch], np.int32)
    tokens = rng.integers(1, vocab, (batch, time)).astype(np.int32)
    tokens[np.arange(time)[None] >= lengths[:, None]] = 0
    return jnp.asarray(tokens), jnp.asarray(lengths)


@pytest.mark.parametrize(("kind", "count"), [("bilstm", 598_209), ("stacked", 635_329)])
def test_parameter_counts_equal_keras(kind, count):
    model = SentimentClassifier(8185, kind)
    params = jax.eval_shape(
        lambda: _params(model, jnp.zeros((1, 4), jnp.int32), jnp.ones((1,), jnp.int32))
    )
    assert sum(x.size for x in jax.tree.leaves(params)) == count
    assert sum(r.params for r in layer_rows(model)) == count


@pytest.mark.parametrize(
    ("kind", "head"), [("bilstm", "last"), ("stacked", "last"), ("bilstm", "pool")]
)
def test_logits_ignore_1000_pad_tokens(kind, head):
    model = SentimentClassifier(50, kind, head=head)
    tokens, lengths = _batch()
    params = _params(model, tokens, lengths)
    logits = model.apply({"params": params}, tokens, lengths)
    padded = jnp.pad(tokens, ((0, 0), (0, 1000)))
    np.testing.assert_allclose(
        model.apply({"params": params}, padded, lengths), logits, atol=1e-5, rtol=0
    )
    assert logits.shape == (3,) and logits.dtype == jnp.float32


def test_pooling_takes_max_and_mean_over_the_real_steps_only():
    ys = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    ys[1, 2:] = 50.0  # padding that a max or a mean over every step would pick up
    lengths = np.array([5, 2, 0], np.int32)
    pooled = PoolOverTime().apply({}, jnp.asarray(ys), jnp.asarray(lengths))
    expected = [
        np.concatenate([y[:n].max(0), y[:n].mean(0)])
        for y, n in zip(ys[:2], lengths[:2], strict=True)
    ]
    np.testing.assert_allclose(pooled[:2], np.stack(expected), rtol=1e-6)
    np.testing.assert_array_equal(pooled[2], 0.0)  # an empty sequence: zeros, not -inf


def test_the_pooling_head_doubles_the_dense_layers_input():
    model = SentimentClassifier(8185, "bilstm", head="pool")
    text = summary(model)
    assert "pooling" in text and "(None, 256)" in text
    assert "Total params: 606,401" in text  # 598,209 + 128 x 64 more dense weights
    with pytest.raises(ValueError, match="unknown head 'attention'"):
        SentimentClassifier(11, head="attention").init(
            jax.random.key(0), jnp.zeros((1, 2), jnp.int32), jnp.ones((1,), jnp.int32)
        )


def test_classifier_gradients_match_finite_differences():
    """Each parameter array's directional derivative against central differences, in
    float64 with a small step (float32 steps large enough to beat rounding cross the
    relu's kink), through both stacked layers and the head."""
    model = SentimentClassifier(11, "stacked")
    tokens, lengths = _batch(vocab=11, time=5)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda x: np.asarray(x, np.float64), _params(model, tokens, lengths))

        def loss(params):
            return jnp.sum(jnp.tanh(model.apply({"params": params}, tokens, lengths)))

        assert_directional_derivatives(loss, (params,))


def test_engine_is_a_model_field_that_changes_no_parameter():
    """Every engine against a plain loop: tests/test_recurrence.py; here the field reaches
    both stacked layers."""
    tokens, lengths = _batch()
    reference = SentimentClassifier(50, "stacked")
    params = _params(reference, tokens, lengths)
    model = SentimentClassifier(50, "stacked", engine="remat")
    assert jax.tree.map(jnp.shape, _params(model, tokens, lengths)) == jax.tree.map(
        jnp.shape, params
    )
    np.testing.assert_allclose(
        model.apply({"params": params}, tokens, lengths),
        reference.apply({"params": params}, tokens, lengths),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="unknown engine"):
        SentimentClassifier(50, engine="cudnn").apply({"params": params}, tokens, lengths)


def test_tokens_must_be_2d():
    model = SentimentClassifier(11)
    with pytest.raises(ValueError, match=r"tokens must be \[batch, time\]"):
        model.init(jax.random.key(0), jnp.zeros((4,), jnp.int32), jnp.ones((4,), jnp.int32))


def test_unknown_kind_lists_choices():
    model = SentimentClassifier(11, "trilstm")
    with pytest.raises(ValueError, match="choose one of"):
        model.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32), jnp.ones((1,), jnp.int32))


def test_summary_lists_layers_in_order_with_output_shapes():
    text = summary(SentimentClassifier(8185, "stacked"))
    rows = [line.split() for line in text.splitlines()[4:-3]]  # between the "=" rules
    names = [row[0] for row in rows]
    assert names == ["embedding", "bidirectional_0", "bidirectional_1", "dense", "logits"]
    assert "(None, None, 128)" in text and "(None, 64)" in text
    assert "Total params: 635,329" in text


def test_summary_command(capsys):
    assert main(["summary", "--model", "bilstm", "--vocab-size", "8185"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 598,209" in out and "bidirectional_0" in out
    assert main(["summary", "--head", "pool"]) == 0
    assert "Total params: 606,401" in capsys.readouterr().out
