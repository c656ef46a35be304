"""A model summary like Keras' `model.summary()`: layer, output shape, parameters, total."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lstm_jax.models import SentimentClassifier

# Abstract batch and time sizes for shape inference; shown as "None" like Keras does.
_BATCH, _TIME = 1009, 1013


@dataclasses.dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int | None, ...]
    params: int


def layer_rows(model: SentimentClassifier) -> list[LayerRow]:
    """One row per top-level layer of `model`, in call order, from abstract evaluation."""
    tokens = jax.ShapeDtypeStruct((_BATCH, _TIME), jnp.int32)
    lengths = jax.ShapeDtypeStruct((_BATCH,), jnp.int32)

    def init(key, tokens, lengths):
        return model.init_with_output(key, tokens, lengths, capture_intermediates=True)

    _, variables = jax.eval_shape(init, jax.random.key(0), tokens, lengths)
    outputs = variables["intermediates"]
    rows = []
    # Parameter-free layers that keep the shape (Dropout) get no row.
    layers = (n for n in outputs if _base(n) in _LAYER_KINDS)
    for name in sorted(layers, key=_call_order):
        (array,) = outputs[name]["__call__"]
        shape = tuple(None if d in (_BATCH, _TIME) else d for d in array.shape)
        count = sum(x.size for x in jax.tree.leaves(variables["params"].get(name, {})))
        rows.append(LayerRow(name, _layer_kind(name), shape, count))
    return rows


# Layer names of `SentimentClassifier` without their depth suffix, in call order.
_LAYER_KINDS = {
    "embedding": "Embed",
    "bidirectional": "Bidirectional(LSTM)",
    "pooling": "PoolOverTime(max, mean)",
    "dense": "Dense",
    "logits": "Dense",
}


def _base(name: str) -> str:
    return name.rsplit("_", 1)[0] if name[-1].isdigit() else name


def _call_order(name: str) -> tuple[int, str]:
    return list(_LAYER_KINDS).index(_base(name)), name


def _layer_kind(name: str) -> str:
    return _LAYER_KINDS[_base(name)]


def summary(model: SentimentClassifier) -> str:
    """The summary table of `model` as text (layer, output shape, parameters, total)."""
    rows = layer_rows(model)
    header = ("Layer (type)", "Output Shape", "Param #")
    lines = [(f"{r.name} ({r.kind})", str(r.output_shape), f"{r.params:,}") for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *lines, strict=True)]
    rule = "-" * (sum(widths) + 4)
    fmt = f"{{:<{widths[0]}}}  {{:<{widths[1]}}}  {{:>{widths[2]}}}"
    total = sum(r.params for r in rows)
    return "\n".join(
        [
            f'Model: "{model.kind}" (vocab_size={model.vocab_size})',
            rule,
            fmt.format(*header),
            "=" * len(rule),
            *(fmt.format(*line) for line in lines),
            "=" * len(rule),
            f"Total params: {total:,}",
            f"Trainable params: {total:,}",
        ]
    )
