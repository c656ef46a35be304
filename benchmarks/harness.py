"""The speed benchmark: one full training step of the sentiment classifiers, ours against
other LSTM implementations, each in its own process; and timed IMDB epochs.

    .venv/bin/python -m benchmarks                       # everything (long on a CPU)
    .venv/bin/python -m benchmarks --quick               # a smoke run: about a minute
    .venv/bin/python -m benchmarks --lengths 64 --rounds 2 --steps 3 \\
        --imdb-archive ../shared/data/aclImdb_labeled.tar.gz --imdb-examples 2000

It imports `lstm_jax` as any user does (in the workers that run it); the library has no
code for the other frameworks.

Workloads: the `bilstm` and `stacked` classifiers of `lstm_jax.models` (vocabulary 8185,
embedding 64), batch 64, random tokens, every sequence full length (lengths = T), T in
{128, 256, 1024}. The timed unit is one training step: forward, backpropagation through
time and an optax/torch Adam update (lr 1e-3, no gradient clipping), float32.

Implementations (`IMPLS`), all of the same model (parameter counts are in the table):
  lstm_jax          ours, the default (fused) engine: `lstm_jax.train.Trainer`'s step, its
                    process set up by `lstm_jax.host.configure()` (one CPU device per core,
                    the step data-parallel over them, as `lstm-jax train` runs it).
  lstm_jax-1dev     the same on one device (`configure(cpu_devices=1)`).
  lstm_jax-scan     ours through the generic masked `lax.scan` engine (`engine="scan"`).
  lstm_jax-remat    ours, engine "remat" (`--remat`): the generic scan, each step recomputed
                    in the backward pass (least activation memory, for long sequences).
  lstm_jax-bf16     ours, fused engine with `matmul_dtype="bfloat16"`: bfloat16 inputs to
                    the recurrent matmuls, float32 accumulation and state (the one entry
                    whose step is not all float32).
  flax              `nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(H)), ...)` with `seq_lengths`.
  keras-jax         Keras 3 on JAX: the tutorial's `Sequential` (Embedding(mask_zero=True) ->
                    Bidirectional(LSTM) -> Dense(64, relu) -> Dense(1)); its step is
                    `model.stateless_call` + `jax.grad` + optax Adam under one `jax.jit`
                    (Keras' documented JAX training loop; `train_on_batch` adds a host sync
                    of its logs every call, so it can only be slower).
  keras-jax-nomask  the same without `mask_zero`: the path where Keras may use cuDNN on a
                    GPU; it ignores padding, so it is right only for full-length batches.
  keras-tf          the same model in Keras 3 on TensorFlow (`KERAS_BACKEND=tensorflow`),
                    trained by `compile` + `train_on_batch`; needs the `bench-tf` extra.
  torch             `nn.LSTM(bidirectional=True, batch_first=True)` on packed sequences
                    (`pack_padded_sequence`: the padding-correct model), `torch.optim.Adam`.
  torch-nopack      the same on plain padded tensors (right only for full-length batches).
  lstm_jax-pallas   ours, engine "pallas": the fused engine's loops as Pallas GPU kernels
                    (`lstm_jax.pallas_lstm`); GPU only, skipped elsewhere, where that
                    engine is the fused one.
  jax-cudnn         `jax.experimental.rnn.lstm` (cuDNN); GPU only, skipped elsewhere.
torch's and cuDNN's LSTMs carry two bias vectors per layer, so they hold 8H more parameters
per direction (+512 for bilstm, +768 for stacked) than the Keras-layout models.

With `--malloc tuned` (the default) every worker process first tunes malloc (mmap and trim
thresholds at their maximum: large blocks are reused, not mapped anew each step) and, but
for Keras-TF's, starts with one glibc malloc arena (`GLIBC_TUNABLES=glibc.malloc.arena_max=1`),
under which PyTorch, Flax, Keras on JAX and lstm_jax run faster, while TensorFlow runs
slower with one arena (`DEFAULT_ARENAS`); `--malloc default` runs every worker on glibc's
defaults, as a user's own script does. Each
(workload, length) cell starts one worker process per implementation. After every worker
has compiled and warmed up (`--warmup` steps, 6 by default: with one malloc arena the heap
grows for the first 4-5 steps of a large step, some of them 3x slower, then holds),
rounds alternate between them (round r starts with the r-th implementation). Each round
starts after a 0.3 s pause, so the threads of the worker before it, which spin a while
after their last task, have gone quiet; it times `--steps` steps ending in a device sync.
The table shows medians over rounds.

FLOPs of one step are counted analytically (`step_flops`): an LSTM direction over inputs
of width E with H units costs 2*B*T*(E+H)*4H forward (the input and the recurrent
matmuls); a bidirectional layer twice that; the backward pass twice the forward (one
matmul for the inputs' gradient, one for the weights'); so a step is
3 * sum over layers of 2 * 2*B*T*(E+H)*4H. The dense head, embedding, gate
nonlinearities and Adam are left out (under 1%). XLA's `cost_analysis()` is reported beside
it for JAX implementations, but it counts a loop body once, so it undercounts any scan.
Achieved FLOP/s are set against a float32 matmul peak measured in the same run
(2048x2048 @ 2048x2048, JAX at default precision, and NumPy).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

# The workloads: the tutorial's two classifiers (the library's `SentimentClassifier` kinds;
# each worker reports its parameter count beside `expected_params`, which checks it).
VOCAB_SIZE = 8185
EMBED_DIM = 64
DENSE_DIM = 64
LEARNING_RATE = 1e-3
WIDTHS = {"bilstm": (64,), "stacked": (64, 32)}
MATMUL_DTYPES = ("float32", "bfloat16")
MALLOC = ("tuned", "default")
IMPLS = (
    "lstm_jax",
    "lstm_jax-1dev",
    "lstm_jax-scan",
    "lstm_jax-bf16",
    "flax",
    "keras-jax",
    "keras-jax-nomask",
    "keras-tf",
    "torch",
    "torch-nopack",
    "lstm_jax-pallas",
    "jax-cudnn",
)
OURS = "lstm_jax"
# Implementations whose workers keep glibc's default malloc arenas under `--malloc tuned`:
# TensorFlow's threads queue on one arena (benchmarks/HISTORY.md, runs at 7b24464).
DEFAULT_ARENAS = ("keras-tf",)
ONE_ARENA = "glibc.malloc.arena_max=1"
REMAT = "lstm_jax-remat"
PEAK_SIZE = 2048
ROUND_SECONDS = 0.5  # `--steps` auto: about this much timed work per round
MAX_AUTO_STEPS = 100
PAUSE_S = 0.3  # idle time before each timed round: the last worker's spinning threads settle
WORKER_TIMEOUT_S = 1800.0
ERROR_TAIL = 2000  # characters of a failed worker's stderr kept in the results


# ----------------------------------------------------------------------------------
# Counting.
# ----------------------------------------------------------------------------------
def step_flops(workload: str, batch: int, length: int) -> int:
    """Analytic FLOPs of one training step (see the module docstring)."""
    forward, features = 0, EMBED_DIM
    for hidden in WIDTHS[workload]:
        forward += 2 * (2 * batch * length * (features + hidden) * 4 * hidden)
        features = 2 * hidden
    return 3 * forward


def expected_params(workload: str, vocab_size: int = VOCAB_SIZE) -> int:
    """Parameters of the Keras-layout classifier (598,209 / 635,329 at V = 8185)."""
    total, features = vocab_size * EMBED_DIM, EMBED_DIM
    for hidden in WIDTHS[workload]:
        total += 2 * (4 * hidden * (features + hidden) + 4 * hidden)
        features = 2 * hidden
    return total + features * DENSE_DIM + DENSE_DIM + DENSE_DIM + 1


def random_batch(batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random full-length data: tokens in [1, V), lengths = T, labels 0/1."""
    rng = np.random.default_rng(seed)
    return {
        "tokens": rng.integers(1, VOCAB_SIZE, (batch, length)).astype(np.int32),
        "lengths": np.full((batch,), length, np.int32),
        "labels": rng.integers(0, 2, (batch,)).astype(np.int32),
    }


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ----------------------------------------------------------------------------------
# Implementations (run inside a worker process; imports stay inside the builders).
# ----------------------------------------------------------------------------------
class Skip(Exception):
    """An implementation that cannot run here (not installed, wrong device)."""


class Runner:
    """One implementation's training step on one batch, ready to time."""

    params: int
    is_jax: bool = False

    def step(self) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        raise NotImplementedError

    def loss(self) -> float:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        return {}


class _CompileCounter:
    """Counts XLA backend compilations (and their seconds) through `jax.monitoring`."""

    def __init__(self):
        import jax

        self.count, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, name: str, secs: float, **_: Any) -> None:
        if name == "/jax/core/compile/backend_compile_duration":
            self.count += 1
            self.seconds += secs


class JaxRunner(Runner):
    """A jitted `step(state, batch) -> (state, loss)` with the state donated, compiled with
    `compiler_options` (the library's runner passes its `Trainer`'s)."""

    is_jax = True

    def __init__(
        self,
        step_fn: Callable,
        state: Any,
        batch: Any,
        params: Any,
        *,
        settle: bool = False,
        compiler_options: dict[str, Any] | None = None,
    ):
        import jax

        self._jax = jax
        self.settle = settle  # wait for each step, as `Trainer` does on several devices
        self.jitted = jax.jit(step_fn, donate_argnums=0, compiler_options=compiler_options)
        self.state = state
        self.batch = jax.device_put(batch)  # arrays already placed keep their placement
        self.params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
        self._loss = None

    def step(self) -> None:
        self.state, self._loss = self.jitted(self.state, self.batch)
        if self.settle:
            self.sync()

    def sync(self) -> None:
        self._jax.block_until_ready((self.state, self._loss))

    def loss(self) -> float:
        return float(self._loss)

    def report(self) -> dict[str, Any]:
        jax = self._jax
        compiled = self.jitted.lower(self.state, self.batch).compile()  # a cache hit
        out: dict[str, Any] = {
            "jit_cache_size": self.jitted._cache_size(),
            "devices": len(jax.tree.leaves(self.batch)[0].sharding.device_set),
        }
        memory = compiled.memory_analysis()
        if memory is not None:
            for name in ("temp", "argument", "output", "alias"):
                out[f"xla_{name}_mb"] = getattr(memory, f"{name}_size_in_bytes") / 2**20
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        if cost and "flops" in cost:
            out["xla_flops"] = float(cost["flops"])
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            out["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
        return out


def _bce_step(logits_fn: Callable, optimizer: Any) -> Callable:
    """`step((params, opt_state), batch) -> (state, loss)`: mean sigmoid BCE, then Adam."""
    import jax
    import optax

    def step(state, batch):
        params, opt_state = state

        def loss_fn(p):
            logits = logits_fn(p, batch["tokens"], batch["lengths"])
            labels = batch["labels"].astype(logits.dtype)
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step


def _lstm_jax(
    workload: str, data: dict[str, np.ndarray], engine: str, matmul_dtype: str = "float32"
) -> Runner:
    import jax

    from lstm_jax.tasks.sentiment import SentimentConfig, SentimentTask
    from lstm_jax.tasks.sentiment.data import Batch
    from lstm_jax.train import Trainer

    if engine == "pallas":
        from lstm_jax import pallas_lstm

        if not pallas_lstm.on_gpu():
            raise Skip(
                f"engine 'pallas' runs its kernels on a GPU only; on {jax.default_backend()} "
                "it is the fused engine, timed as lstm_jax"
            )
    batch_size = data["tokens"].shape[0]
    config = SentimentConfig(
        model=workload,
        batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        clip_norm=0.0,
        matmul_dtype=matmul_dtype,
        engine=engine,
    )
    trainer = Trainer(SentimentTask(config))  # data-parallel over the devices `host` set up
    state = trainer.init_state()
    weights = np.ones((batch_size,), np.float32)
    batch = jax.device_put(
        Batch(data["tokens"], data["lengths"], data["labels"], weights), trainer.split
    )

    def step(state, batch):  # the library's step, its loss sum turned into the mean
        state, sums = trainer.step_fn(state, batch)
        return state, sums["loss"] / sums["count"]

    return JaxRunner(
        step,
        state,
        batch,
        state.params,
        settle=trainer.parallel,
        compiler_options=trainer.compiler_options,
    )


def _flax(workload: str, data: dict[str, np.ndarray]) -> Runner:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    widths = WIDTHS[workload]

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, tokens, lengths):
            x = nn.Embed(VOCAB_SIZE, EMBED_DIM)(tokens)
            for depth, width in enumerate(widths):
                last = depth == len(widths) - 1
                layer = nn.Bidirectional(
                    nn.RNN(nn.OptimizedLSTMCell(width)),
                    nn.RNN(nn.OptimizedLSTMCell(width)),
                    return_carry=last,
                )
                if last:  # an LSTM carry is (c, h); keep h of each direction
                    (carry_fwd, carry_bwd), _ = layer(x, seq_lengths=lengths)
                    x = jnp.concatenate([carry_fwd[1], carry_bwd[1]], axis=-1)
                else:
                    x = layer(x, seq_lengths=lengths)
            x = nn.relu(nn.Dense(DENSE_DIM)(x))
            return nn.Dense(1)(x)[:, 0]

    model = Classifier()
    params = model.init(jax.random.key(0), data["tokens"][:1], data["lengths"][:1])["params"]
    optimizer = optax.adam(LEARNING_RATE)
    step = _bce_step(lambda p, t, n: model.apply({"params": p}, t, n), optimizer)
    return JaxRunner(step, (params, optimizer.init(params)), data, params)


def _keras_model(backend: str, workload: str, length: int, *, mask: bool) -> Any:
    """The tutorial's `Sequential` in Keras 3 on `backend` (the worker's `KERAS_BACKEND`)."""
    try:
        import keras
    except ImportError as e:
        raise Skip(f"keras not installed ({e}); pip install -e '.[bench]'") from e
    if keras.backend.backend() != backend:
        raise Skip(f"keras runs on {keras.backend.backend()!r}, not {backend!r} (KERAS_BACKEND)")
    layers: list[Any] = [
        keras.Input((length,), dtype="int32"),
        keras.layers.Embedding(VOCAB_SIZE, EMBED_DIM, mask_zero=mask),
    ]
    widths = WIDTHS[workload]
    for depth, width in enumerate(widths):
        last = depth == len(widths) - 1
        layers.append(
            keras.layers.Bidirectional(keras.layers.LSTM(width, return_sequences=not last))
        )
    layers += [keras.layers.Dense(DENSE_DIM, activation="relu"), keras.layers.Dense(1)]
    return keras.Sequential(layers)


def _keras(workload: str, data: dict[str, np.ndarray], *, mask: bool) -> Runner:
    model = _keras_model("jax", workload, data["tokens"].shape[1], mask=mask)
    import jax
    import optax

    optimizer = optax.adam(LEARNING_RATE)

    def step(state, batch):
        trainable, non_trainable, opt_state = state

        def loss_fn(tv):
            logits, ntv = model.stateless_call(tv, non_trainable, batch["tokens"], training=True)
            labels = batch["labels"].astype(logits.dtype)
            return optax.sigmoid_binary_cross_entropy(logits[:, 0], labels).mean(), ntv

        (loss, ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return (optax.apply_updates(trainable, updates), ntv, opt_state), loss

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    state = (trainable, non_trainable, optimizer.init(trainable))
    return JaxRunner(step, state, data, trainable)


class KerasTFRunner(Runner):
    """Keras 3 on TensorFlow: the tutorial's model, `compile(Adam, binary cross-entropy from
    logits)` and `train_on_batch`, which runs the same compiled train function as
    `model.fit` (Keras' defaults, `jit_compile="auto"`). Each call returns the loss to the
    host, so every step ends synchronised."""

    def __init__(self, workload: str, data: dict[str, np.ndarray]):
        try:
            import tensorflow  # noqa: F401  (Keras' backend; a clear skip where it is missing)
        except ImportError as e:
            raise Skip(f"tensorflow not installed ({e}); pip install -e '.[bench-tf]'") from e
        import keras

        self.model = _keras_model("tensorflow", workload, data["tokens"].shape[1], mask=True)
        self.model.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        self.tokens = data["tokens"]
        self.labels = data["labels"].astype(np.float32)
        self.params = int(self.model.count_params())
        self._loss = None

    def step(self) -> None:
        self._loss = self.model.train_on_batch(self.tokens, self.labels)

    def sync(self) -> None:
        pass  # train_on_batch has already brought the loss to the host

    def loss(self) -> float:
        return float(np.asarray(self._loss).reshape(-1)[0])


def _jax_cudnn(workload: str, data: dict[str, np.ndarray]) -> Runner:
    import jax
    import jax.numpy as jnp
    import optax

    if jax.default_backend() != "gpu":
        raise Skip(
            f"jax.experimental.rnn.lstm needs cuDNN (a GPU); backend is {jax.default_backend()}"
        )
    from jax.experimental import rnn

    widths = WIDTHS[workload]
    keys = iter(jax.random.split(jax.random.key(0), 2 + len(widths)))
    params: dict[str, Any] = {
        "embedding": jax.random.uniform(
            next(keys), (VOCAB_SIZE, EMBED_DIM), minval=-0.05, maxval=0.05
        )
    }
    features = EMBED_DIM
    for depth, width in enumerate(widths):
        params[f"lstm_{depth}"] = rnn.init_lstm_weight(next(keys), features, width, 1, True)
        features = 2 * width
    params["dense"] = {
        "kernel": jax.nn.initializers.glorot_uniform()(next(keys), (features, DENSE_DIM)),
        "bias": jnp.zeros((DENSE_DIM,)),
    }
    params["logits"] = {"kernel": jnp.zeros((DENSE_DIM, 1)), "bias": jnp.zeros((1,))}

    def logits_fn(p, tokens, lengths):
        x = p["embedding"][tokens]
        batch = tokens.shape[0]
        for depth, width in enumerate(widths):
            zeros = jnp.zeros((2, batch, width), x.dtype)
            out = rnn.lstm(
                x, zeros, zeros, p[f"lstm_{depth}"], lengths,
                input_size=x.shape[-1], hidden_size=width, num_layers=1,
                dropout=0.0, bidirectional=True,
            )  # fmt: skip
            x, h_n = out[0], out[1]
        x = jnp.concatenate([h_n[0], h_n[1]], axis=-1)
        x = jax.nn.relu(x @ p["dense"]["kernel"] + p["dense"]["bias"])
        return (x @ p["logits"]["kernel"] + p["logits"]["bias"])[:, 0]

    optimizer = optax.adam(LEARNING_RATE)
    step = _bce_step(logits_fn, optimizer)
    return JaxRunner(step, (params, optimizer.init(params)), data, params)


class TorchRunner(Runner):
    def __init__(self, workload: str, data: dict[str, np.ndarray], *, pack: bool):
        try:
            import torch
        except ImportError as e:
            raise Skip(f"torch not installed ({e}); pip install -e '.[bench]'") from e
        from torch import nn
        from torch.nn.utils.rnn import pack_padded_sequence

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        widths = WIDTHS[workload]

        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = nn.Embedding(VOCAB_SIZE, EMBED_DIM)
                features, lstms = EMBED_DIM, []
                for width in widths:
                    lstms.append(nn.LSTM(features, width, batch_first=True, bidirectional=True))
                    features = 2 * width
                self.lstms = nn.ModuleList(lstms)
                self.dense = nn.Linear(features, DENSE_DIM)
                self.logits = nn.Linear(DENSE_DIM, 1)

            def forward(self, tokens, lengths_cpu):
                x = self.embedding(tokens)
                if pack:
                    x = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
                for lstm in self.lstms:
                    x, (h_n, _) = lstm(x)
                x = torch.cat([h_n[0], h_n[1]], dim=-1)  # forward last real step, backward first
                return self.logits(torch.relu(self.dense(x)))[:, 0]

        self.model = Classifier().to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
        self.tokens = torch.from_numpy(data["tokens"]).long().to(self.device)
        self.lengths = torch.from_numpy(data["lengths"]).long()  # packing wants them on CPU
        self.labels = torch.from_numpy(data["labels"]).float().to(self.device)
        self.params = sum(p.numel() for p in self.model.parameters())
        self._loss = None

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(self.tokens, self.lengths)
        loss = self.torch.nn.functional.binary_cross_entropy_with_logits(logits, self.labels)
        loss.backward()
        self.optimizer.step()
        self._loss = loss

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def loss(self) -> float:
        return float(self._loss.detach().cpu())

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"torch_threads": self.torch.get_num_threads()}
        if self.device.type == "cuda":
            out["device_peak_mb"] = self.torch.cuda.max_memory_allocated() / 2**20
        return out


BUILDERS: dict[str, Callable[[str, dict[str, np.ndarray]], Runner]] = {
    "lstm_jax": lambda w, d: _lstm_jax(w, d, "fused"),
    "lstm_jax-1dev": lambda w, d: _lstm_jax(w, d, "fused"),
    "lstm_jax-scan": lambda w, d: _lstm_jax(w, d, "scan"),
    "lstm_jax-bf16": lambda w, d: _lstm_jax(w, d, "fused", matmul_dtype="bfloat16"),
    "lstm_jax-pallas": lambda w, d: _lstm_jax(w, d, "pallas"),
    REMAT: lambda w, d: _lstm_jax(w, d, "remat"),
    "flax": _flax,
    "keras-jax": lambda w, d: _keras(w, d, mask=True),
    "keras-jax-nomask": lambda w, d: _keras(w, d, mask=False),
    "keras-tf": KerasTFRunner,
    "torch": lambda w, d: TorchRunner(w, d, pack=True),
    "torch-nopack": lambda w, d: TorchRunner(w, d, pack=False),
    "jax-cudnn": _jax_cudnn,
}


# ----------------------------------------------------------------------------------
# The worker side: one implementation on one cell, driven by JSON lines on stdin.
# ----------------------------------------------------------------------------------
def _worker_channel():
    """A private copy of stdout for results; fd 1 goes to stderr so library prints
    cannot corrupt the protocol."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    return send


def _serve_cell(impl: str, workload: str, batch: int, length: int, seed: int) -> None:
    send = _worker_channel()
    counter = None
    try:
        runner = BUILDERS[impl](workload, random_batch(batch, length, seed))
        if runner.is_jax:
            counter = _CompileCounter()
    except Skip as e:
        send({"status": "skipped", "reason": str(e)})
        return
    send({"status": "ready", "params": runner.params})
    for line in sys.stdin:
        command = json.loads(line)
        name = command["cmd"]
        if name == "quit":
            return
        if name == "warmup":
            compiles = counter.seconds if counter else 0.0
            start = time.perf_counter()
            runner.step()
            runner.sync()
            first = time.perf_counter() - start
            loss = runner.loss()
            start = time.perf_counter()
            for _ in range(command["steps"]):
                runner.step()
            runner.sync()
            rest = (time.perf_counter() - start) / command["steps"]
            send({
                "first_step_s": first,
                "compile_s": counter.seconds - compiles if counter else None,
                "warm_step_s": rest,
                "loss0": loss,
            })  # fmt: skip
        elif name == "time":
            compiles = counter.count if counter else 0
            runner.sync()
            start = time.perf_counter()
            for _ in range(command["steps"]):
                runner.step()
            runner.sync()
            elapsed = time.perf_counter() - start
            send({
                "ms_per_step": 1e3 * elapsed / command["steps"],
                "recompiles": counter.count - compiles if counter else None,
            })  # fmt: skip
        elif name == "report":
            send({"rss_mb": _max_rss_mb(), **runner.report()})


def _serve_peak() -> None:
    """Measure this machine's float32 matmul rate (JAX default precision, NumPy)."""
    send = _worker_channel()
    import jax
    import jax.numpy as jnp

    n = PEAK_SIZE
    flops = 2.0 * n**3
    rng = np.random.default_rng(0)
    a_np, b_np = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out: dict[str, Any] = {
        "size": n,
        "jax_backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
    }
    for precision in ("default", "highest"):
        matmul = jax.jit(lambda a, b, p=precision: jnp.matmul(a, b, precision=p))
        a, b = jax.device_put(a_np), jax.device_put(b_np)
        matmul(a, b).block_until_ready()
        best = math.inf
        for _ in range(10):
            start = time.perf_counter()
            matmul(a, b).block_until_ready()
            best = min(best, time.perf_counter() - start)
        out[f"jax_{precision}_gflops"] = flops / best / 1e9
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        np.matmul(a_np, b_np)
        best = min(best, time.perf_counter() - start)
    out["numpy_gflops"] = flops / best / 1e9
    send(out)


def _serve_imdb(archive: str | None, examples: int | None, epochs: int, matmul_dtype: str) -> None:
    """Time `epochs` epochs of the main job's single BiLSTM (config `imdb_bilstm`, with
    `matmul_dtype` matmul inputs) over all 25,000 training reviews (the validation slice
    included), whole reviews, after a warm-up of one step per padded shape. The first
    epoch still meets each shape's first steps after compilation; the later ones are
    what every epoch of a run after the first costs."""
    send = _worker_channel()
    import jax

    from lstm_jax import configs
    from lstm_jax.tasks.sentiment import SentimentTask
    from lstm_jax.tasks.sentiment import data as data_lib
    from lstm_jax.tasks.sentiment.task import Encoded
    from lstm_jax.train import Trainer

    config = configs.get("imdb_bilstm").replace(matmul_dtype=matmul_dtype)
    task = SentimentTask(config, data=archive)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        task.prepare(Path(workdir), ("train", "val"))
    prepare_s = time.perf_counter() - start
    train, val = task.splits["train"], task.splits["val"]
    every = Encoded(train.tokens + val.tokens, np.concatenate([train.labels, val.labels]))
    if examples is not None:
        order = np.random.default_rng(0).permutation(len(every.tokens))[:examples]
        every = Encoded([every.tokens[i] for i in order], every.labels[order])
    task.splits["train"] = every
    plan = [task.batches("train", e) for e in range(epochs)]
    batches = plan[0]
    trainer = Trainer(task, len(batches))
    state = trainer.init_state()
    counter = _CompileCounter()
    shapes: dict[tuple[int, ...], data_lib.Batch] = {}
    for batch in batches:  # every epoch has the same shapes (and batch counts)
        shapes.setdefault(batch.tokens.shape, batch)
    start = time.perf_counter()
    for batch in shapes.values():  # warm-up: one step per padded shape compiles them all
        state, sums = trainer.train_step(state, batch)
    jax.block_until_ready(state)
    warmup_s = time.perf_counter() - start
    compiles = counter.count
    epochs_s = []
    for epoch in plan:
        start = time.perf_counter()
        for batch in epoch:
            state, sums = trainer.train_step(state, batch)
        jax.block_until_ready((state, sums))
        epochs_s.append(time.perf_counter() - start)
    reviews = sum(int(np.sum(b.weights)) for b in batches)
    send({
        "status": "ok",
        "examples": reviews,
        "matmul_dtype": trainer.task.config.matmul_dtype,  # the config the steps were built from
        "batches": len(batches),
        "shapes": sorted(s[1] for s in shapes),
        "padding_fraction": data_lib.padding_fraction(batches),
        "prepare_s": prepare_s,
        "warmup_s": warmup_s,
        "warmup_compiles": compiles,
        "compile_s": counter.seconds,
        "epochs_s": epochs_s,
        "epoch_s": epochs_s[-1],
        "reviews_per_s": reviews / epochs_s[-1],
        "recompiles": counter.count - compiles,
        "jit_cache_size": trainer.jitted_train_step._cache_size(),
        "rss_mb": _max_rss_mb(),
    })  # fmt: skip


# ----------------------------------------------------------------------------------
# The driver side.
# ----------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    pass


class Worker:
    """A worker process and its JSON-lines channel."""

    def __init__(self, args: Sequence[str], env: dict[str, str]):
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            # Run as a file: only the workers that time lstm_jax import it (and JAX).
            [sys.executable, str(Path(__file__).resolve()), "--worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
            bufsize=1,
        )

    def receive(self, timeout: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.kill()
            raise WorkerError(f"no answer in {timeout:.0f} s{self._tail()}")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise WorkerError(f"worker exited with code {code}{self._tail()}")
        return json.loads(line)

    def call(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died; receive() says how
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            try:
                stream.close()
            except BrokenPipeError:
                pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _tail(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", errors="replace").strip()
        return f"; stderr ends:\n{text[-ERROR_TAIL:]}" if text else ""


def _worker_env(impl: str | None = None, malloc: str = "tuned") -> dict[str, str]:
    """The environment of a worker process (of `impl`'s, when it runs one): with
    `malloc="tuned"`, one glibc malloc arena but for `DEFAULT_ARENAS`."""
    env = dict(os.environ)
    if malloc == "tuned" and impl not in DEFAULT_ARENAS:
        tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
        if not any(t.startswith("glibc.malloc.arena_max=") for t in tunables):
            env["GLIBC_TUNABLES"] = ":".join([*tunables, ONE_ARENA])
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several processes share a GPU
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _keras_backend(env: dict[str, str], impl: str) -> dict[str, str]:
    """`env` with the Keras backend `impl` needs (Keras reads it once, at import)."""
    return {**env, "KERAS_BACKEND": "tensorflow" if impl == "keras-tf" else "jax"}


def _run_cell(
    workload: str, length: int, impls: Sequence[str], options: argparse.Namespace, log
) -> list[dict[str, Any]]:
    """All implementations on one (workload, length): warm up each, then alternate."""
    rows = {
        impl: {"workload": workload, "length": length, "batch": options.batch, "impl": impl}
        for impl in impls
    }
    args = ["cell", "--workload", workload, "--batch", str(options.batch), "--length", str(length)]
    args += ["--malloc", options.malloc]
    workers = {  # start in parallel
        impl: Worker(
            [*args, "--impl", impl], _keras_backend(_worker_env(impl, options.malloc), impl)
        )
        for impl in impls
    }
    alive: dict[str, Worker] = {}

    def fail(impl: str, error: Exception) -> None:
        rows[impl].update(status="error", error=str(error))
        workers[impl].kill()
        alive.pop(impl, None)
        log(f"  {impl}: error: {str(error).splitlines()[0]}")

    try:
        for impl, worker in workers.items():
            try:
                message = worker.receive()
            except WorkerError as e:
                fail(impl, e)
                continue
            if message["status"] == "skipped":
                rows[impl].update(status="skipped", reason=message["reason"])
                log(f"  {impl}: skipped ({message['reason']})")
                worker.close()
            else:
                rows[impl].update(status="ok", params=message["params"], rounds_ms=[])
                alive[impl] = worker
        steps: dict[str, int] = {}
        for impl, worker in list(alive.items()):
            try:
                warm = worker.call("warmup", steps=options.warmup)
            except WorkerError as e:
                fail(impl, e)
                continue
            rows[impl].update(warm)
            auto = math.ceil(ROUND_SECONDS / max(warm["warm_step_s"], 1e-6))
            steps[impl] = options.steps or min(max(auto, 3), MAX_AUTO_STEPS)
            log(f"  {impl}: first step {warm['first_step_s']:.2f} s, {steps[impl]} steps/round")
        for r in range(options.rounds):
            order = list(alive)
            order = order[r % len(order) :] + order[: r % len(order)] if order else order
            for impl in order:
                time.sleep(PAUSE_S)
                try:
                    timed = alive[impl].call("time", steps=steps[impl])
                except WorkerError as e:
                    fail(impl, e)
                    continue
                rows[impl]["rounds_ms"].append(timed["ms_per_step"])
                if timed["recompiles"] is not None:
                    rows[impl]["recompiles"] = rows[impl].get("recompiles", 0) + timed["recompiles"]
        for impl, worker in list(alive.items()):
            try:
                rows[impl].update(worker.call("report"), steps_per_round=steps[impl])
            except WorkerError as e:
                fail(impl, e)
    finally:
        for worker in workers.values():
            worker.close()
    flops = step_flops(workload, options.batch, length)
    for row in rows.values():
        if row.get("status") == "ok" and row["rounds_ms"]:
            ms = statistics.median(row["rounds_ms"])
            row.update(
                ms_per_step=ms,
                reviews_per_s=options.batch / (ms / 1e3),
                flops=flops,
                gflops_per_s=flops / (ms / 1e3) / 1e9,
            )
    for row in rows.values():
        if row.get("status") == "ok":
            row["params_expected"] = expected_params(workload)
    ours = rows.get(OURS, {}).get("ms_per_step")
    for row in rows.values():
        if ours and row.get("ms_per_step"):
            row["speedup_of_ours"] = row["ms_per_step"] / ours
    return list(rows.values())


def _single(args: Sequence[str], malloc: str) -> dict[str, Any]:
    worker = Worker([*args, "--malloc", malloc], _worker_env(malloc=malloc))
    try:
        return worker.receive()
    except WorkerError as e:
        return {"status": "error", "error": str(e)}
    finally:
        worker.close()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "keras", "torch", "numpy")
        },
    }


def _csv(kind: Callable[[str], Any], choices: Sequence[str] | None = None):
    def parse(text: str) -> list[Any]:
        items = [kind(t) for t in text.split(",") if t.strip()]
        bad = [t for t in items if choices is not None and t not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"bad value(s) {bad or text!r}"
                + (f"; choose from {list(choices)}" if choices else "")
            )
        return items

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options (`python -m benchmarks --help`)."""
    parser.add_argument("--workloads", type=_csv(str, tuple(WIDTHS)), default=list(WIDTHS))
    parser.add_argument("--lengths", type=_csv(int), default=[128, 256, 1024], help="T values")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--impls", type=_csv(str, IMPLS), default=list(IMPLS), help=f"from {','.join(IMPLS)}"
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per implementation")
    parser.add_argument(
        "--steps", type=int, default=None,
        help=f"timed steps per round (default: about {ROUND_SECONDS} s of steps, 3 to 100)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=6,
        help="untimed steps after the first (compiling) one: malloc's heap settles in 4-5",
    )  # fmt: skip
    parser.add_argument("--remat", action="store_true", help=f"also time {REMAT}")
    parser.add_argument(
        "--malloc", choices=MALLOC, default="tuned",
        help="tuned: every worker tunes glibc malloc (one arena but for Keras-TF); "
        "default: glibc's defaults, as in a user's own script",
    )  # fmt: skip
    parser.add_argument(
        "--imdb-archive", default=None,
        help="IMDB archive for the epoch benchmark (default: $LSTM_JAX_IMDB_ARCHIVE; none: skip)",
    )  # fmt: skip
    parser.add_argument("--imdb-examples", type=int, default=None, help="time only N reviews")
    parser.add_argument(
        "--imdb-epochs", type=int, default=2,
        help="timed IMDB epochs (the table shows each; the last is the steady state)",
    )  # fmt: skip
    parser.add_argument(
        "--imdb-matmul-dtype", default="float32", choices=MATMUL_DTYPES,
        help="the IMDB epochs' matmul inputs (float32: the main job's config as it is)",
    )  # fmt: skip
    parser.add_argument("--no-imdb", action="store_true", help="skip the IMDB epochs")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/...)")
    parser.add_argument("--quick", action="store_true", help="smoke run: T=32, 1 round, 2 steps")
    return parser


def _check(options: argparse.Namespace) -> None:
    for name in ("batch", "rounds", "warmup", "imdb_epochs"):
        if getattr(options, name) < 1:
            flag = name.replace("_", "-")
            raise ValueError(f"--{flag} must be at least 1, got {getattr(options, name)}")
    if options.steps is not None and options.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {options.steps}")
    if any(t < 1 for t in options.lengths):
        raise ValueError(f"--lengths must be positive, got {options.lengths}")


def run_benchmark(
    options: argparse.Namespace,
    log: Callable[[str], None] = print,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark described by `options` (see `add_arguments`); returns the results.

    `save(results)` is called after every cell with what is measured so far, so a run
    that is cut short still leaves its finished cells behind.
    """
    if options.quick:
        options.lengths, options.rounds, options.steps, options.warmup = [32], 1, 2, 1
    _check(options)
    impls = list(dict.fromkeys(options.impls))
    if options.remat and REMAT not in impls:
        impls.append(REMAT)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "options": {k: v for k, v in vars(options).items() if k not in ("run", "command")},
        "machine": machine_info(),
        "flops_formula": "3 * sum_layers 2 * 2*B*T*(E+H)*4H (fwd+bwd of both directions)",
    }
    log("measuring the float32 matmul peak ...")
    results["peak"] = _single(["peak"], options.malloc)
    peak = results["peak"].get("jax_default_gflops")
    results["cells"] = []
    for workload in options.workloads:
        for length in options.lengths:
            log(f"{workload} T={length} B={options.batch}")
            rows = _run_cell(workload, length, impls, options, log)
            for row in rows:
                if peak and row.get("gflops_per_s"):
                    row["peak_fraction"] = row["gflops_per_s"] / peak
            results["cells"].extend(rows)
            if save is not None:
                save(results)
    archive = options.imdb_archive or os.environ.get("LSTM_JAX_IMDB_ARCHIVE")
    if options.no_imdb or not archive:
        why = "--no-imdb" if options.no_imdb else "no --imdb-archive / $LSTM_JAX_IMDB_ARCHIVE"
        results["imdb"] = {"status": "skipped", "reason": why}
    else:
        log(
            f"IMDB epochs (bilstm, the main job's config, {options.imdb_matmul_dtype} "
            f"matmul inputs) x{options.imdb_epochs} ..."
        )
        args = ["imdb", "--archive", str(Path(archive).expanduser().absolute())]
        if options.imdb_examples:
            args += ["--examples", str(options.imdb_examples)]
        args += ["--epochs", str(options.imdb_epochs)]
        args += ["--matmul-dtype", options.imdb_matmul_dtype]
        results["imdb"] = _single(args, options.malloc)
    results["seconds"] = time.perf_counter() - started
    return results


# ----------------------------------------------------------------------------------
# Output.
# ----------------------------------------------------------------------------------
COLUMNS = (
    ("workload", "workload"),
    ("T", "length"),
    ("impl", "impl"),
    ("params", "params"),
    ("ms/step", "ms_per_step"),
    ("reviews/s", "reviews_per_s"),
    ("ours ×", "speedup_of_ours"),
    ("first step s", "first_step_s"),
    ("compile s", "compile_s"),
    ("XLA temp MB", "xla_temp_mb"),
    ("RSS MB", "rss_mb"),
    ("GFLOP/s", "gflops_per_s"),
    ("% peak", "peak_fraction"),
    ("recompiles", "recompiles"),
    ("loss₀", "loss0"),
)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key == "params":
        return f"{value:,}"
    if key == "peak_fraction":
        return f"{100 * value:.1f}"
    if key == "speedup_of_ours":
        return f"{value:.2f}"
    if isinstance(value, float):
        return (
            f"{value:.3f}"
            if abs(value) < 10
            else f"{value:,.0f}"
            if abs(value) >= 1000
            else f"{value:.1f}"
        )
    return str(value)


def format_table(results: dict[str, Any]) -> str:
    """The results as Markdown: machine, peak, one row per (workload, T, impl), IMDB."""
    machine, peak = results["machine"], results.get("peak", {})
    lines = [
        f"**{results['date']}** · {machine['cpu']} · {machine['cpu_count']} CPUs · "
        f"{peak.get('jax_backend', '?')} / {peak.get('device_kind', '?')} · "
        + " ".join(f"{k} {v}" for k, v in machine["versions"].items() if v),
        "",
        "float32 matmul peak ({}³): JAX default {} GFLOP/s, highest {}, NumPy {}".format(
            peak.get("size", PEAK_SIZE),
            *(
                _cell("", peak.get(k))
                for k in ("jax_default_gflops", "jax_highest_gflops", "numpy_gflops")
            ),
        )
        if "jax_default_gflops" in peak
        else f"matmul peak: {peak.get('error', 'not measured')}",
        "",
        "| " + " | ".join(title for title, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in results["cells"]:
        if row.get("status") != "ok":
            why = row.get("reason") or (row.get("error") or "").splitlines()[0]
            lines.append(
                f"| {row['workload']} | {row['length']} | {row['impl']} | "
                f"{row.get('status')}: {why} |" + " |" * (len(COLUMNS) - 4)
            )
            continue
        cells = [_cell(k, row.get(k)) for _, k in COLUMNS]
        extra = row["params"] - row["params_expected"]
        if extra:  # torch and cuDNN keep two bias vectors per gate
            cells[[k for _, k in COLUMNS].index("params")] += f" ({extra:+,})"
        lines.append("| " + " | ".join(cells) + " |")
    imdb = results.get("imdb", {})
    lines.append("")
    if imdb.get("status") == "ok":
        epochs = ", ".join(f"{e:.1f}" for e in imdb["epochs_s"])
        dtype = imdb.get("matmul_dtype", "float32")
        config = "main job config" + ("" if dtype == "float32" else f", {dtype} matmul inputs")
        lines.append(
            f"IMDB epoch (bilstm, {config}): {imdb['examples']:,} reviews in "
            f"{imdb['batches']} batches, {epochs} s (epochs in order), "
            f"{imdb['reviews_per_s']:,.0f} reviews/s (the last), "
            f"padding {100 * imdb['padding_fraction']:.1f}%, "
            f"warm-up {imdb['warmup_s']:.1f} s over {len(imdb['shapes'])} shapes, "
            f"{imdb['recompiles']} recompiles in the timed epochs"
        )
    else:
        lines.append(
            f"IMDB epoch: {imdb.get('status')}: "
            f"{imdb.get('reason') or (imdb.get('error') or '').splitlines()[0]}"
        )
    return "\n".join(lines)


def default_out(results: dict[str, Any]) -> Path:
    peak = results.get("peak", {})
    device = str(peak.get("device_kind") or peak.get("jax_backend") or "unknown")
    slug = "".join(c if c.isalnum() else "-" for c in device.lower()).strip("-")
    return Path("benchmarks") / "results" / f"{results['date'][:10]}-{slug}.json"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks`: run, print the table, write the JSON."""
    parser = add_arguments(
        argparse.ArgumentParser(
            prog="python -m benchmarks",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    options = parser.parse_args(argv)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731

    def save(results: dict[str, Any]) -> Path:
        out = Path(options.out) if options.out else default_out(results)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        return out

    results = run_benchmark(options, log, save)
    out = save(results)
    print(format_table(results))
    print(f"\nwrote {out}")
    return 0


def _tune_malloc() -> None:
    """glibc malloc's mmap and trim thresholds at their maximum (`mallopt`), so large freed
    blocks are kept for reuse instead of unmapped."""
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
        for option in (-3, -1):  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
            mallopt(option, 2**31 - 1)


def _worker_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/harness.py --worker")
    parser.add_argument("role", choices=["cell", "peak", "imdb"])
    parser.add_argument("--impl", choices=list(BUILDERS))
    parser.add_argument("--workload", choices=list(WIDTHS))
    parser.add_argument("--batch", type=int)
    parser.add_argument("--length", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archive")
    parser.add_argument("--examples", type=int)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--matmul-dtype", choices=MATMUL_DTYPES, default="float32")
    parser.add_argument("--malloc", choices=MALLOC, default="tuned")
    args = parser.parse_args(argv)
    if args.malloc == "tuned":  # every implementation, before any allocation of note
        _tune_malloc()
    if args.role == "imdb" or (args.role == "cell" and args.impl.startswith(OURS)):
        from lstm_jax import host

        host.configure(1 if args.impl == "lstm_jax-1dev" else None)
    if args.role == "cell":
        _serve_cell(args.impl, args.workload, args.batch, args.length, args.seed)
    elif args.role == "peak":
        _serve_peak()
    else:
        _serve_imdb(args.archive, args.examples, args.epochs, args.matmul_dtype)


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)  # run as a file: this folder's modules must not shadow top-level ones
    if sys.argv[1:2] == ["--worker"]:
        try:
            _worker_main(sys.argv[2:])
        except Exception:
            traceback.print_exc()
            sys.exit(1)
    else:
        sys.exit(main())
