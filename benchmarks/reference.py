"""The benchmark's shared weights and its NumPy reference forward pass.

Before any implementation is timed it loads the same weights (`make_weights`, in the
library's parameter layout, which is Keras' too: `(in, 4H)` / `(H, 4H)` / `(4H,)`, gates
i, f, c, o) and computes logits and loss on the timed batch; the driver compares them with
`forward` here, a float64 loop over time written from the LSTM's equations and sharing no
code with any implementation. A row that disagrees is not timed (`check`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Tolerances of `check`: float32 rows must match to 1e-4; bfloat16 rows (matmul inputs
# rounded to 8 significant bits) to what that rounding allows over the sequence.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return rng.uniform(-scale, scale, shape).astype(np.float32)


def _lstm(rng: np.random.Generator, features: int, hidden: int) -> dict[str, np.ndarray]:
    scale = 1.0 / np.sqrt(hidden)  # PyTorch's default range: gates neither dead nor saturated
    return {
        "kernel": _uniform(rng, (features, 4 * hidden), scale),
        "recurrent_kernel": _uniform(rng, (hidden, 4 * hidden), scale),
        "bias": _uniform(rng, (4 * hidden,), scale),
    }


def _dense(rng: np.random.Generator, inputs: int, outputs: int) -> dict[str, np.ndarray]:
    return {
        "kernel": _uniform(rng, (inputs, outputs), np.sqrt(6.0 / (inputs + outputs))),
        "bias": _uniform(rng, (outputs,), 0.1),
    }


def make_weights(spec: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Random weights of workload `spec` (`harness.WORKLOADS`) as a nested dict of arrays,
    the library's parameter tree of that model."""
    rng = np.random.default_rng(seed)
    embedding = rng.normal(0.0, 0.5, (spec["vocab"], spec["embed"])).astype(np.float32)
    features = spec["embed"]
    if spec["kind"] == "charlm":
        params: dict[str, Any] = {"embed": {"embedding": embedding}}
        for depth, width in enumerate(spec["widths"]):
            params[f"layer_{depth}"] = _lstm(rng, features, width)
            features = width
        params["head"] = _dense(rng, features, spec["vocab"])
        return params
    params = {"embedding": {"embedding": embedding}}
    for depth, width in enumerate(spec["widths"]):
        params[f"bidirectional_{depth}"] = {
            direction: _lstm(rng, features, width) for direction in ("forward", "backward")
        }
        features = 2 * width
    params["dense"] = _dense(rng, features, spec["dense"])
    params["logits"] = _dense(rng, spec["dense"], 1)
    return params


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """`{"a/b": array}` from a nested dict (for `np.savez`); `unflatten` inverts it."""
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = np.asarray(value)
    return out


def unflatten(flat: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = np.asarray(value)
    return tree


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _run_lstm(cell: dict[str, np.ndarray], xs_BTF: np.ndarray, reverse: bool) -> np.ndarray:
    """Outputs `[B, T, H]` of one LSTM direction from zero state, in the inputs' order."""
    kernel, recurrent, bias = (
        cell[k].astype(np.float64) for k in ("kernel", "recurrent_kernel", "bias")
    )
    hidden = recurrent.shape[0]
    batch, time, _ = xs_BTF.shape
    inputs = xs_BTF @ kernel + bias  # [B, T, 4H]
    h, c = np.zeros((batch, hidden)), np.zeros((batch, hidden))
    out = np.zeros((batch, time, hidden))
    for t in reversed(range(time)) if reverse else range(time):
        z = inputs[:, t] + h @ recurrent
        i, f = _sigmoid(z[:, :hidden]), _sigmoid(z[:, hidden : 2 * hidden])
        g, o = np.tanh(z[:, 2 * hidden : 3 * hidden]), _sigmoid(z[:, 3 * hidden :])
        c = f * c + i * g
        h = o * np.tanh(c)
        out[:, t] = h
    return out


def forward(params: dict[str, Any], kind: str, data: dict[str, np.ndarray]) -> tuple:
    """`(logits, mean loss)` in float64: a classifier's `[B]` logits and sigmoid
    cross-entropy on full-length `data["tokens"]`, or the char LM's `[B, T, V]` logits
    over `data["ids"][:, :-1]` and cross-entropy against `ids[:, 1:]`."""
    if kind == "charlm":
        ids = data["ids"]
        x = params["embed"]["embedding"].astype(np.float64)[ids[:, :-1]]
        depth = 0
        while f"layer_{depth}" in params:
            x = _run_lstm(params[f"layer_{depth}"], x, reverse=False)
            depth += 1
        logits = x @ params["head"]["kernel"] + params["head"]["bias"]
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        targets = ids[:, 1:]
        picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        return logits, float(-picked.mean())
    if not np.all(data["lengths"] == data["tokens"].shape[1]):
        raise ValueError("the reference runs full-length batches only")
    x = params["embedding"]["embedding"].astype(np.float64)[data["tokens"]]
    depth = 0
    while f"bidirectional_{depth}" in params:
        layer = params[f"bidirectional_{depth}"]
        fwd = _run_lstm(layer["forward"], x, reverse=False)
        bwd = _run_lstm(layer["backward"], x, reverse=True)
        depth += 1
        if f"bidirectional_{depth}" in params:
            x = np.concatenate([fwd, bwd], axis=-1)
        else:  # forward at the last step, backward at the first
            x = np.concatenate([fwd[:, -1], bwd[:, 0]], axis=-1)
    x = np.maximum(x @ params["dense"]["kernel"] + params["dense"]["bias"], 0.0)
    logits = (x @ params["logits"]["kernel"] + params["logits"]["bias"])[:, 0]
    labels = data["labels"].astype(np.float64)
    loss = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
    return logits, float(loss.mean())


def check(
    reference: tuple[np.ndarray, float], logits: Any, loss: float, precision: str
) -> str | None:
    """None when an implementation's `logits` (the first rows of the batch, as many as
    it sent) and `loss` match the reference within `TOLERANCE[precision]` (absolute,
    plus as much relative); else what differs."""
    ref_logits, ref_loss = reference
    logits = np.asarray(logits, np.float64)
    ref_logits = ref_logits[: logits.shape[0]]
    if logits.shape != ref_logits.shape:
        return f"logits of shape {logits.shape}, expected {ref_logits.shape}"
    tol = TOLERANCE[precision]
    worst = float(np.max(np.abs(logits - ref_logits) - tol * np.abs(ref_logits)))
    if worst > tol or not np.isfinite(worst):
        return f"logits differ from the reference by up to {worst + tol:.2e} (tolerance {tol:g})"
    return check_loss(ref_loss, loss, precision)


def check_loss(reference: float, loss: float, precision: str) -> str | None:
    """None when `loss` matches the reference loss within `TOLERANCE[precision]`."""
    tol = TOLERANCE[precision]
    if not abs(loss - reference) <= tol * (1 + abs(reference)):
        return f"loss {loss:.6f}, reference {reference:.6f} (tolerance {tol:g})"
    return None
