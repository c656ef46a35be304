"""Weights in and out of Keras: the tutorial's Sequential models and ours share a layout.

`keras.Model.get_weights()` of the tutorial's model lists, in order: the embedding matrix;
for each `Bidirectional(LSTM)` the forward kernel, recurrent kernel and bias, then the
backward ones; then each `Dense` layer's kernel and bias. Keras' LSTM uses the same
`(in, 4H)` / `(H, 4H)` / `(4H,)` arrays and i, f, c, o gate order as `lstm_jax.cells`, so
the conversion is a reshuffle of the list into our parameter tree, with shapes checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lstm_jax.models import check_kind

_LSTM_PARTS = ("kernel", "recurrent_kernel", "bias")
_DENSE_LAYERS = ("dense", "logits")


def _expected_count(kind: str) -> int:
    return 1 + 6 * len(check_kind(kind)) + 2 * len(_DENSE_LAYERS)


def from_keras(weights: Sequence[np.ndarray], kind: str) -> dict:
    """Our `SentimentClassifier` params from `keras.Model.get_weights()` of the tutorial's
    Sequential model of the same `kind` ("bilstm" or "stacked")."""
    widths = check_kind(kind)
    weights = [np.asarray(w, np.float32) for w in weights]
    if len(weights) != _expected_count(kind):
        raise ValueError(
            f"a Keras {kind!r} model has {_expected_count(kind)} weight arrays "
            f"(embedding, 6 per Bidirectional(LSTM), 2 per Dense), got {len(weights)}; "
            "pass model.get_weights() of the tutorial's Sequential model"
        )
    it = iter(weights)
    params: dict = {"embedding": {"embedding": next(it)}}
    features = params["embedding"]["embedding"].shape[1]
    for depth, width in enumerate(widths):
        layer = {}
        for direction in ("forward", "backward"):
            cell = dict(zip(_LSTM_PARTS, (next(it) for _ in _LSTM_PARTS), strict=True))
            _check_shapes(
                f"bidirectional_{depth}/{direction}",
                cell,
                {
                    "kernel": (features, 4 * width),
                    "recurrent_kernel": (width, 4 * width),
                    "bias": (4 * width,),
                },
            )
            layer[direction] = cell
        params[f"bidirectional_{depth}"] = layer
        features = 2 * width
    for name in _DENSE_LAYERS:
        params[name] = {"kernel": next(it), "bias": next(it)}
        if params[name]["kernel"].shape[0] != features:
            raise ValueError(
                f"Keras layer {name!r} has kernel {params[name]['kernel'].shape}, expected "
                f"{features} inputs; is this the {kind!r} model?"
            )
        features = params[name]["kernel"].shape[1]
    return params


def to_keras(params: dict, kind: str) -> list[np.ndarray]:
    """The inverse of `from_keras`: a list for `keras.Model.set_weights()`."""
    widths = check_kind(kind)
    out = [np.asarray(params["embedding"]["embedding"])]
    for depth in range(len(widths)):
        layer = params[f"bidirectional_{depth}"]
        for direction in ("forward", "backward"):
            out.extend(np.asarray(layer[direction][part]) for part in _LSTM_PARTS)
    for name in _DENSE_LAYERS:
        out.extend([np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])])
    return out


def _check_shapes(where: str, arrays: dict, expected: dict) -> None:
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise ValueError(
                f"Keras weights for {where}/{name} have shape {arrays[name].shape}, "
                f"expected {shape}; the list must follow model.get_weights() order"
            )
