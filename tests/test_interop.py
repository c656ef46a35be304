"""Keras parity: the tutorial's Sequential model and ours give the same logits."""

import jax
import numpy as np
import pytest

from lstm_jax import SentimentClassifier
from lstm_jax.interop import from_keras, to_keras

keras = pytest.importorskip("keras")

# Keras' own code broadcasts implicitly; the strict setting is for our code only.
pytestmark = [
    pytest.mark.usefixtures("_keras_rank_promotion"),
    pytest.mark.filterwarnings(  # raised inside keras' get_weights under numpy 2
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]


@pytest.fixture
def _keras_rank_promotion():
    with jax.numpy_rank_promotion("allow"):
        yield


VOCAB = 40


def _keras_model(kind):
    layers = [
        keras.Input(shape=(None,), dtype="int32"),
        keras.layers.Embedding(VOCAB, 64, mask_zero=True),
    ]
    if kind == "stacked":
        layers.append(keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True)))
        layers.append(keras.layers.Bidirectional(keras.layers.LSTM(32)))
    else:
        layers.append(keras.layers.Bidirectional(keras.layers.LSTM(64)))
    layers += [keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(layers)
    # Random biases too, so that every weight array is exercised.
    rng = np.random.default_rng(0)
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape) for w in model.get_weights()])
    return model


def _right_padded_batch():
    rng = np.random.default_rng(1)
    lengths = np.array([9, 4, 1, 7], np.int32)
    tokens = rng.integers(1, VOCAB, (4, 9)).astype(np.int32)
    tokens[np.arange(9)[None] >= lengths[:, None]] = 0
    return tokens, lengths


@pytest.mark.parametrize("kind", ["bilstm", "stacked"])
def test_logits_equal_keras_with_mask_zero(kind):
    model = _keras_model(kind)
    tokens, lengths = _right_padded_batch()
    expected = np.asarray(model(tokens))[:, 0]
    params = from_keras(model.get_weights(), kind)
    ours = SentimentClassifier(VOCAB, kind).apply({"params": params}, tokens, lengths)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["bilstm", "stacked"])
def test_to_keras_inverts_from_keras(kind):
    weights = _keras_model(kind).get_weights()
    back = to_keras(from_keras(weights, kind), kind)
    assert len(back) == len(weights)
    for a, b in zip(back, weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_wrong_weight_list_raises_clear_error():
    weights = _keras_model("bilstm").get_weights()
    with pytest.raises(ValueError, match="has 17 weight arrays"):
        from_keras(weights, "stacked")
    weights[1] = weights[1][:, :128]
    with pytest.raises(ValueError, match="forward/kernel have shape"):
        from_keras(weights, "bilstm")
