"""One LSTM layer on a GPU: the Pallas kernels beside the fused loop, cuDNN and PyTorch.

    python -m benchmarks.gpu_kernels --out kernels.jsonl          # on an NVIDIA GPU

For each hidden size H and length T (batch 64, 64 input features, one direction), it
compiles a forward + backward pass (the gradient of a loss that reads every output and the
final carry) through `fused.lstm_layer_tm` with `kernel="loop"` and `kernel="pallas"`, and
checks on padded sequences that the kernels give the loop's outputs and gradients (largest
difference relative to each array's largest value). It then times that pass on
full-length sequences in each, in `jax.experimental.rnn.lstm` (cuDNN) and in PyTorch's
`nn.LSTM` (cuDNN) when installed, on the same weights and inputs (each row's loss is
reported beside its time: they agree to rounding): median of `--reps` after two warm-up
calls, each call ending in a device sync. Every float32 matmul runs at full float32
precision, no TF32 (the kernels ask for it, the loop runs under
`default_matmul_precision("highest")`, cuDNN through JAX gets `precision=HIGHEST`, PyTorch
`allow_tf32=False`); the bfloat16 rows round the matmul inputs (PyTorch: autocast; cuDNN
through JAX has no bfloat16 LSTM).

The kernels are compiled here even on a jax whose Pallas Triton backend is deprecated
(`pallas_lstm.triton_supported()` False, where engine "pallas" runs the loop): this
measures whether they are worth porting. One JSON line per cell, written as it finishes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import fused, pallas_lstm, recurrence
from lstm_jax.cells import init_lstm

BATCH, FEATURES = 64, 64


def _readout(ys_TBH: jax.Array, h: jax.Array, c: jax.Array) -> jax.Array:
    """A loss that reads every output (time-major) and both halves of the final carry."""
    weights = jnp.sin(jnp.arange(ys_TBH.size, dtype=jnp.float32)).reshape(ys_TBH.shape)
    return jnp.sum(ys_TBH * weights) + jnp.sum(jnp.sin(h) + c**2)


def loss_step(kernel: str, matmul_dtype: Any):
    """The jitted loss and gradients of one layer through `fused.lstm_layer_tm`, as
    `f(params, xs_TBE, mask_TB)` (the mask an argument: padded and full rows share one
    compile)."""

    def loss(params, xs, mask):
        ys, (h, c) = fused.lstm_layer_tm(params, xs, mask, kernel=kernel, matmul_dtype=matmul_dtype)
        return _readout(ys, h, c)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _time(fn, reps: int) -> tuple[float, float]:
    """Median milliseconds of `fn()` (which synchronises and returns the loss) after two
    warm-up calls, and the loss."""
    loss = fn()
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return round(statistics.median(times), 3), float(loss)


def _jax_cudnn(params, xs_TBE, hidden: int, *, reference: bool = False):
    """`jax.experimental.rnn.lstm` on the same weights (its flat layout: W_ih, W_hh, b_ih,
    b_hh with the gates in our i, f, g, o order; our bias in b_ih, zeros in b_hh), as a
    function that runs the pass and returns the loss. `reference`: `rnn.lstm_ref` on those
    weights, which runs on any backend (how the tests check this without a GPU)."""
    from jax.experimental import rnn

    flat = jnp.concatenate(
        [
            params["kernel"].T.reshape(-1),
            params["recurrent_kernel"].T.reshape(-1),
            params["bias"],
            jnp.zeros_like(params["bias"]),
        ]
    )
    xs = jnp.swapaxes(xs_TBE, 0, 1)
    lengths = jnp.full((xs.shape[0],), xs.shape[1], jnp.int32)
    shape = dict(input_size=FEATURES, hidden_size=hidden, num_layers=1, bidirectional=False)

    def loss(w, x):
        zeros = jnp.zeros((1, x.shape[0], hidden), x.dtype)
        if reference:
            unpacked = rnn.unpack_lstm_weights(w, FEATURES, hidden, 1, False)
            y, h, c = rnn.lstm_ref(x, zeros, zeros, *unpacked, lengths, dropout=0.0, **shape)
        else:
            precision = jax.lax.Precision.HIGHEST
            y, h, c = rnn.lstm(
                x, zeros, zeros, w, lengths, dropout=0.0, precision=precision, **shape
            )
        return _readout(jnp.swapaxes(y, 0, 1), h, c)  # time-major, as the loop's outputs

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return lambda: float(step(flat, xs)[0])  # synchronises


def _torch(params, xs_TBE, hidden: int, bf16: bool, device: str = "cuda"):
    """PyTorch's `nn.LSTM` on the same weights, as a function that runs the pass and
    returns the loss (`bf16`: its forward under bfloat16 autocast)."""
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    def tensor(a):
        return torch.from_numpy(np.array(a, np.float32)).to(device)

    lstm = torch.nn.LSTM(FEATURES, hidden).to(device)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(tensor(params["kernel"]).T)
        lstm.weight_hh_l0.copy_(tensor(params["recurrent_kernel"]).T)
        lstm.bias_ih_l0.copy_(tensor(params["bias"]))
        lstm.bias_hh_l0.zero_()
    xs = tensor(xs_TBE).requires_grad_(True)

    def step() -> float:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            y, (h, c) = lstm(xs)
        y, h, c = y.float(), h.float(), c.float()
        weights = torch.sin(torch.arange(y.numel(), device=y.device, dtype=torch.float32))
        loss = (y.reshape(-1) * weights).sum() + (torch.sin(h) + c**2).sum()
        lstm.zero_grad(set_to_none=True)
        xs.grad = None
        loss.backward()
        return loss.detach().item()  # synchronises

    return step


def inputs(hidden: int, length: int) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """A cell's weights (the library's initialisation), inputs `[T, B, E]` and lengths."""
    k_p, k_x, k_l = jax.random.split(jax.random.PRNGKey(hidden * 7919 + length), 3)
    params = init_lstm(k_p, FEATURES, hidden)
    xs = jax.random.normal(k_x, (length, BATCH, FEATURES))
    return params, xs, jax.random.randint(k_l, (BATCH,), 0, length + 1)


def cell(hidden: int, length: int, dtype: str, reps: int) -> dict[str, Any]:
    """One (H, T, dtype) cell: the kernels' check against the loop, then every timing."""
    matmul_dtype = None if dtype == "float32" else jnp.bfloat16
    params, xs, lengths = inputs(hidden, length)
    padded = recurrence.step_mask(lengths, length)  # [T, B]
    full = jnp.ones((length, BATCH), bool)
    row: dict[str, Any] = {"hidden": hidden, "length": length, "batch": BATCH, "dtype": dtype}
    with jax.default_matmul_precision("highest"):
        loop = loss_step("loop", matmul_dtype)
        timed = {"loop": loop}
        start = time.perf_counter()
        try:
            kernels = loss_step("pallas", matmul_dtype)
            got = jax.block_until_ready(kernels(params, xs, padded))
            row["pallas_compile_s"] = round(time.perf_counter() - start, 2)
            want = loop(params, xs, padded)
            row["pallas_max_rel_diff"] = max(
                float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30))
                for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
            )
            timed["pallas"] = kernels
        except Exception as e:  # a size the kernels do not compile for: say so, time the rest
            row["pallas_error"] = f"{type(e).__name__}: {str(e)[:400]}"
        for name, fn in timed.items():
            row[f"{name}_ms"], row[f"{name}_loss"] = _time(
                lambda fn=fn: float(fn(params, xs, full)[0]), reps
            )
        if dtype == "float32":
            row["jax_cudnn_ms"], row["jax_cudnn_loss"] = _time(_jax_cudnn(params, xs, hidden), reps)
    try:
        torch_step = _torch(params, xs, hidden, dtype == "bfloat16")
    except ImportError:
        return row
    row["torch_ms"], row["torch_loss"] = _time(torch_step, reps)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", default="32,64,128,256")
    parser.add_argument("--lengths", default="256,1024")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default=None, help="append one JSON line per cell here")
    options = parser.parse_args(argv)
    if jax.default_backend() != "gpu":
        parser.error(f"needs a GPU backend; JAX's is {jax.default_backend()}")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; Pallas Triton backend "
        f"undeprecated here: {pallas_lstm.triton_supported()}",
        flush=True,
    )
    for hidden in map(int, options.hidden.split(",")):  # small first: the likeliest to compile
        for length in map(int, options.lengths.split(",")):
            for dtype in options.dtypes.split(","):
                try:
                    row = cell(hidden, length, dtype, options.reps)
                except Exception:
                    row = {"hidden": hidden, "length": length, "dtype": dtype,
                           "error": traceback.format_exc()[-1500:]}  # fmt: skip
                print(json.dumps(row), flush=True)
                if options.out:
                    with open(options.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
