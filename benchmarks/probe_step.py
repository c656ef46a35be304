"""Paired probe: one whole train step of the BiLSTM classifier under several engines,
interleaved in one process (round-robin, medians of the repeats), so a noisy shared
machine hits every variant alike; for changes too small for the benchmark's processes.

The step is the tutorial's `SentimentClassifier(8185, "bilstm")` (Embedding 64 ->
Bidirectional(LSTM(64)) -> Dense(64, relu) -> Dense(1)) with sigmoid cross-entropy and
Adam: forward, BPTT and the update, jitted once, on one device.

    .venv/bin/python benchmarks/probe_step.py                      # scan, fused, flax
    .venv/bin/python benchmarks/probe_step.py --variants fused fused-bf16 remat
    .venv/bin/python benchmarks/probe_step.py --batch 64 --time 256 --repeats 15

Variants: an engine of `lstm_jax.recurrence.ENGINES` (the model's `engine` field), with
`-bf16` for bfloat16 matmul inputs, and `flax` (`nn.Bidirectional(nn.RNN(
nn.OptimizedLSTMCell(64)))` with `seq_lengths`, the same embedding and head). Prints
compile seconds and per-step milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax.models import SentimentClassifier

VOCAB = 8185


class FlaxBiLSTM(nn.Module):
    """The same classifier with Flax's own recurrent layers (the peer to beat)."""

    @nn.compact
    def __call__(self, tokens_BT, lengths_B):
        x = nn.Embed(VOCAB, 64)(tokens_BT)
        layer = nn.Bidirectional(
            nn.RNN(nn.OptimizedLSTMCell(64)), nn.RNN(nn.OptimizedLSTMCell(64)), return_carry=True
        )
        ((_, h_fwd), (_, h_bwd)), _ = layer(x, seq_lengths=lengths_B)
        x = nn.relu(nn.Dense(64)(jnp.concatenate([h_fwd, h_bwd], axis=-1)))
        return nn.Dense(1)(x)[:, 0]


def make_model(variant: str) -> nn.Module:
    if variant == "flax":
        return FlaxBiLSTM()
    engine, _, dtype = variant.partition("-")
    matmul_dtype = "bfloat16" if dtype == "bf16" else None
    return SentimentClassifier(VOCAB, "bilstm", engine=engine, matmul_dtype=matmul_dtype)


def make_step(variant: str, batch: int, length: int):
    model = make_model(variant)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, VOCAB, (batch, length)), jnp.int32)
    lengths = jnp.asarray(rng.integers(length // 2, length + 1, (batch,)), jnp.int32)
    labels = jnp.asarray(rng.integers(0, 2, (batch,)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), tokens, lengths)["params"]
    tx = optax.adam(1e-3)

    def train_step(state, tokens, lengths, labels):
        params, opt_state = state

        def loss_fn(params):
            logits = model.apply({"params": params}, tokens, lengths)
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    state = (params, tx.init(params))
    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=0).lower(state, tokens, lengths, labels)
    compiled = compiled.compile()
    compile_s = time.perf_counter() - start
    return compiled, state, (tokens, lengths, labels), compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["scan", "fused", "flax"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--inner", type=int, default=3, help="steps per timed sample")
    args = parser.parse_args()

    runs = {}
    for variant in args.variants:
        compiled, state, batch, compile_s = make_step(variant, args.batch, args.time)
        state, loss = compiled(state, *batch)  # warm-up
        jax.block_until_ready(loss)
        runs[variant] = [compiled, state, batch, []]
        print(f"{variant:>12}: compile {compile_s:6.2f} s", flush=True)

    for _ in range(args.repeats):
        for run in runs.values():
            compiled, state, batch, samples = run
            start = time.perf_counter()
            for _ in range(args.inner):
                state, loss = compiled(state, *batch)
            jax.block_until_ready(loss)
            samples.append((time.perf_counter() - start) / args.inner * 1e3)
            run[1] = state

    base = statistics.median(runs[args.variants[0]][3])
    for variant, (_, _, _, samples) in runs.items():
        med = statistics.median(samples)
        print(
            f"{variant:>12}: median {med:7.2f} ms  min {min(samples):7.2f} ms  "
            f"ratio to {args.variants[0]} {med / base:5.2f}"
        )


if __name__ == "__main__":
    main()
