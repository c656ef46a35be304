"""The speed benchmark: one full training step of the sentiment classifiers and the char
LM, ours against other LSTM implementations, each in its own process; and timed IMDB epochs.

    .venv/bin/python -m benchmarks                       # everything (long on a CPU)
    .venv/bin/python -m benchmarks --quick               # a smoke run: a minute or two
    .venv/bin/python -m benchmarks --lengths 64 --rounds 2 --steps 3 \\
        --imdb-archive ../shared/data/aclImdb_labeled.tar.gz --imdb-examples 2000

It imports `lstm_jax` as any user does (in the workers that run it); the library has no
code for the other frameworks.

Workloads (`WORKLOADS`): the `bilstm` and `stacked` classifiers of `lstm_jax.models`
(vocabulary 8185, embedding 64), random tokens, every sequence full length, T in
`--lengths`; and `charlm`, the char LM of `charlm_shakespeare` (Embedding(65, 64) -> LSTM(512)
-> LSTM(512) -> Dense(65)), random windows of T in `--windows`, loss averaged over every
position. Batch 64. The timed unit is one training step: forward, backpropagation through
time and an optax/torch Adam update (lr 1e-3, no gradient clipping, no dropout).

On a GPU the float32 JAX rows run their matmuls at full float32 precision (JAX rounds
their inputs to TF32 there by default, which the check below rejects), as cuDNN's float32
LSTM in PyTorch computes.

The same computation, checked: every implementation loads the same random weights
(`benchmarks/reference.py`, through `lstm_jax.interop` for Keras) and reports its logits
and loss on the timed batch before any step; they must match a float64 NumPy loop written
from the LSTM's equations to 1e-4 (bfloat16 rows: 5e-2), and the first training step's
loss must match too. A row that does not is marked "mismatch" and not timed.

Implementations (`IMPLS`), all of the same model (parameter counts are in the table):
  lstm_jax          ours, the default (fused) engine: `lstm_jax.train.Trainer`'s step, its
                    process set up by `lstm_jax.host.configure()` (one CPU device per core,
                    the step data-parallel over them, as `lstm-jax train` runs it).
  lstm_jax-bf16     the same with `matmul_dtype="bfloat16"`: bfloat16 inputs to the
                    recurrent matmuls, float32 accumulation and state.
  lstm_jax-lib      library use: `SentimentClassifier.apply` / `CharLM.apply` in a user's
  lstm_jax-lib-bf16 own `jax.jit` of value_and_grad + optax Adam, one device, no `host`
                    settings, no compiler options (and its bfloat16 twin).
  lstm_jax-1dev     `Trainer`'s step on one device (`configure(cpu_devices=1)`).
  lstm_jax-scan     ours through the generic masked `lax.scan` engine (`engine="scan"`).
  lstm_jax-remat    ours, engine "remat" (`--remat`): the generic scan, each step recomputed
                    in the backward pass (least activation memory, for long sequences).
  flax              `nn.RNN(nn.OptimizedLSTMCell(H))`; for the classifiers in
                    `nn.Bidirectional` with `seq_lengths`.
  keras-jax         Keras 3 on JAX: the tutorial's `Sequential` (Embedding(mask_zero=True) ->
                    Bidirectional(LSTM) -> Dense(64, relu) -> Dense(1)); its step is
                    `model.stateless_call` + `jax.grad` + optax Adam under one `jax.jit`
                    (Keras' documented JAX training loop). Classifiers only.
  keras-jax-nomask  the same without `mask_zero` (right only for full-length batches).
  keras-tf          the same model in Keras 3 on TensorFlow (`KERAS_BACKEND=tensorflow`),
                    trained by `compile` + `train_on_batch`; needs the `bench-tf` extra.
  torch             `nn.LSTM` at its best: `torch.set_flush_denormal(True)` (an Intel CPU
                    handles denormal floats in microcode, and a last-state classifier's
                    gradient decays into them: 6x slower backward without it) and one
                    thread per available core; the classifiers on packed sequences
                    (`pack_padded_sequence`: the padding-correct model); `torch.optim.Adam`.
  torch-nopack      the same on plain padded tensors (right only for full-length batches).
  torch-reversed    one `nn.LSTM` per direction on padded tensors, the backward one over
                    each row's real steps reversed in place: padding-correct, and on
                    PyTorch's fast CPU path, which packed rows of unequal lengths leave
                    (about 10x slower on IMDB's batches).
  torch-bf16        `torch` with its forward pass under `torch.autocast(bfloat16)`.
  torch-default     `torch` with PyTorch's default settings, as a user's script runs it.
  lstm_jax-pallas   ours, engine "pallas": the fused engine's loops as Pallas GPU kernels
                    (`lstm_jax.pallas_lstm`); GPU only, skipped elsewhere, where that
                    engine is the fused one. From jax 0.11, which deprecates Pallas'
                    Triton backend (the engine then runs the loop), the row compiles the
                    kernels anyway, its settings saying so.
  jax-cudnn         `jax.experimental.rnn.lstm` (cuDNN); GPU only, skipped elsewhere; its
                    own LSTM weights (not checked).
torch's and cuDNN's LSTMs carry two bias vectors per layer, so they hold 8H more parameters
per direction than the Keras-layout models (ours go in `bias_ih`, zeros in `bias_hh`).

With `torch` among the implementations, the IMDB epochs run again in PyTorch on the same
batches of the same token ids (`--imdb-torch`: its layouts, "reversed" by default).

Two comparisons (`comparisons`), at equal precision only: the whole machine (`lstm_jax`,
`lstm_jax-bf16`) and library use (`lstm_jax-lib`, `lstm_jax-lib-bf16`), each against the
fastest peer row of its precision that passed the check (`torch-default` is shown, not
compared). Every peer is a single process using every core through its own threads.

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
matmuls); a bidirectional layer twice that; the char LM's output layer 2*B*T*H*V; the
backward pass twice the forward (one matmul for the inputs' gradient, one for the
weights'); so a step is 3 * the forward. The dense head, embedding, gate nonlinearities
and Adam are left out (under 1%). XLA's `cost_analysis()` is reported beside it for JAX
implementations, but it counts a loop body once, so it undercounts any scan.
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
from typing import Any, ClassVar

import numpy as np

# The workloads: the tutorial's two classifiers (the library's `SentimentClassifier` kinds)
# and the char LM of `charlm_shakespeare` (`CharLM`, 2 x 512); each worker reports its
# parameter count beside `expected_params`, which checks it.
VOCAB_SIZE = 8185
EMBED_DIM = 64
DENSE_DIM = 64
LEARNING_RATE = 1e-3
CLASSIFIER = dict(kind="classifier", vocab=VOCAB_SIZE, embed=EMBED_DIM, dense=DENSE_DIM)
WORKLOADS: dict[str, dict[str, Any]] = {
    "bilstm": {**CLASSIFIER, "widths": (64,)},
    "stacked": {**CLASSIFIER, "widths": (64, 32)},
    "charlm": dict(kind="charlm", vocab=65, embed=64, widths=(512, 512)),
}
MATMUL_DTYPES = ("float32", "bfloat16")
MALLOC = ("tuned", "default")
IMPLS = (
    "lstm_jax",
    "lstm_jax-bf16",
    "lstm_jax-lib",
    "lstm_jax-lib-bf16",
    "lstm_jax-1dev",
    "lstm_jax-scan",
    "flax",
    "keras-jax",
    "keras-jax-nomask",
    "keras-tf",
    "torch",
    "torch-nopack",
    "torch-reversed",
    "torch-bf16",
    "torch-default",
    "lstm_jax-pallas",
    "jax-cudnn",
)
OURS = "lstm_jax"
BFLOAT16 = ("lstm_jax-bf16", "lstm_jax-lib-bf16", "torch-bf16")  # every other row: float32
# The two comparisons (issue 23): the whole machine, ours as `lstm-jax train` runs it (a
# device per core); and library use, a user's own `jit` of the model's `apply`, one device,
# no process settings. Each set against the fastest peer row of the same precision.
WHOLE = {"float32": "lstm_jax", "bfloat16": "lstm_jax-bf16"}
LIBRARY = {"float32": "lstm_jax-lib", "bfloat16": "lstm_jax-lib-bf16"}
DEFAULTS = ("torch-default",)  # a peer with its default settings: shown, not compared
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
def precision(impl: str) -> str:
    """The precision an implementation's row runs at: "bfloat16" or "float32"."""
    return "bfloat16" if impl in BFLOAT16 else "float32"


def step_flops(workload: str, batch: int, length: int) -> int:
    """Analytic FLOPs of one training step (see the module docstring)."""
    spec = WORKLOADS[workload]
    directions = 1 if spec["kind"] == "charlm" else 2
    forward, features = 0, spec["embed"]
    for hidden in spec["widths"]:
        forward += directions * (2 * batch * length * (features + hidden) * 4 * hidden)
        features = directions * hidden
    if spec["kind"] == "charlm":  # the output layer at every position
        forward += 2 * batch * length * features * spec["vocab"]
    return 3 * forward


def expected_params(workload: str) -> int:
    """Parameters of the Keras-layout model (598,209 / 635,329 for the classifiers;
    3,318,401 for the char LM)."""
    spec = WORKLOADS[workload]
    directions = 1 if spec["kind"] == "charlm" else 2
    total, features = spec["vocab"] * spec["embed"], spec["embed"]
    for hidden in spec["widths"]:
        total += directions * (4 * hidden * (features + hidden) + 4 * hidden)
        features = directions * hidden
    if spec["kind"] == "charlm":
        return total + features * spec["vocab"] + spec["vocab"]
    return total + features * spec["dense"] + spec["dense"] + spec["dense"] + 1


def random_batch(batch: int, length: int, seed: int = 0, workload: str = "bilstm") -> dict:
    """Random full-length data: for a classifier tokens in [1, V), lengths = T, labels
    0/1; for the char LM `ids <int32>[B, T + 1]` (inputs and next-symbol targets)."""
    rng = np.random.default_rng(seed)
    spec = WORKLOADS[workload]
    if spec["kind"] == "charlm":
        return {"ids": rng.integers(0, spec["vocab"], (batch, length + 1)).astype(np.int32)}
    return {
        "tokens": rng.integers(1, spec["vocab"], (batch, length)).astype(np.int32),
        "lengths": np.full((batch,), length, np.int32),
        "labels": rng.integers(0, 2, (batch,)).astype(np.int32),
    }


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ----------------------------------------------------------------------------------
# Implementations (run inside a worker process; imports stay inside the builders).
# ----------------------------------------------------------------------------------
class Skip(Exception):
    """An implementation that cannot run here (not installed, wrong device, workload)."""


class Runner:
    """One implementation's training step on one batch, ready to time."""

    params: int
    is_jax: bool = False
    settings: ClassVar[dict[str, Any]] = {}  # what was set to run it at its best (JSON)

    def step(self) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        raise NotImplementedError

    def loss(self) -> float:
        raise NotImplementedError

    def check(self) -> tuple[np.ndarray, float] | None:
        """Logits (the first `CHECK_ROWS` examples) and mean loss of the loaded weights
        on the batch, before any step; None where the shared weights cannot be loaded."""
        return None

    def report(self) -> dict[str, Any]:
        return {}


CHECK_ROWS = 2  # char-LM rows whose [T, V] logits are checked (a classifier: every row)


def _check_rows(workload: str, logits: Any) -> np.ndarray:
    rows = CHECK_ROWS if WORKLOADS[workload]["kind"] == "charlm" else None
    return np.asarray(logits, np.float32)[:rows]


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
    `compiler_options` (the library's runner passes its `Trainer`'s); `check_fn()` gives
    the loaded weights' logits and loss."""

    is_jax = True

    def __init__(
        self,
        step_fn: Callable,
        state: Any,
        batch: Any,
        params: Any,
        *,
        check_fn: Callable[[], tuple[Any, Any]] | None = None,
        settle: bool = False,
        compiler_options: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ):
        import jax

        self._jax = jax
        self.settle = settle  # wait for each step, as `Trainer` does on several devices
        self.jitted = jax.jit(step_fn, donate_argnums=0, compiler_options=compiler_options)
        self.state = state
        self.batch = jax.device_put(batch)  # arrays already placed keep their placement
        self.params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
        self.check_fn = check_fn
        self.settings = {"compiler_options": compiler_options, **(settings or {})}
        self._loss = None

    def step(self) -> None:
        self.state, self._loss = self.jitted(self.state, self.batch)
        if self.settle:
            self.sync()

    def sync(self) -> None:
        self._jax.block_until_ready((self.state, self._loss))

    def loss(self) -> float:
        return float(self._loss)

    def check(self) -> tuple[np.ndarray, float] | None:
        if self.check_fn is None:
            return None
        logits, loss = self.check_fn()
        return np.asarray(logits, np.float32), float(loss)

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


def _jax_loss(workload: str, logits: Any, batch: dict[str, Any]) -> Any:
    """The workload's mean loss: sigmoid cross-entropy of a classifier's logits, or the
    char LM's softmax cross-entropy against the next symbols."""
    import jax.numpy as jnp
    import optax

    if WORKLOADS[workload]["kind"] == "charlm":
        targets = batch["ids"][:, 1:]
        return optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), targets
        ).mean()
    labels = batch["labels"].astype(logits.dtype)
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()


def _plain_jax(
    workload: str,
    data: dict[str, np.ndarray],
    params: Any,
    logits_fn: Callable,
    settings: dict[str, Any] | None = None,
) -> JaxRunner:
    """A user's own training step over `logits_fn(params, batch)`: `jax.value_and_grad`
    of the mean loss and optax Adam under one plain `jax.jit`, on the default device."""
    import jax
    import optax

    optimizer = optax.adam(LEARNING_RATE)

    def step(state, batch):
        params, opt_state = state
        loss_of = lambda p: _jax_loss(workload, logits_fn(p, batch), batch)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_of)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def check_fn():
        logits = logits_fn(params, data)
        return _check_rows(workload, logits), _jax_loss(workload, logits, data)

    state = (params, optimizer.init(params))
    return JaxRunner(step, state, data, params, check_fn=check_fn, settings=settings)


def _as_jax(weights: dict[str, Any]) -> Any:
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda w: jnp.asarray(w, jnp.float32), weights)


def _lstm_jax(
    workload: str,
    data: dict[str, np.ndarray],
    weights: dict[str, Any],
    engine: str,
    matmul_dtype: str = "float32",
) -> Runner:
    """The library's own step (`Trainer.step_fn`, data-parallel over the devices that
    `host.configure` made), as `lstm-jax train` runs it."""
    import jax

    from lstm_jax.train import Trainer
    from lstm_jax.train import step as step_lib

    spec = WORKLOADS[workload]
    settings: dict[str, Any] = {"engine": engine, "matmul_dtype": matmul_dtype}
    if engine == "pallas":
        from lstm_jax import pallas_lstm

        if not pallas_lstm.on_gpu():
            raise Skip(
                f"engine 'pallas' runs its kernels on a GPU only; on {jax.default_backend()} "
                "it is the fused engine, timed as lstm_jax"
            )
        if not all(pallas_lstm.supported(width) for width in spec["widths"]):
            raise Skip(f"the kernels do not take layers of {spec['widths']} units")
        if not pallas_lstm.triton_supported():
            # There the engine runs the fused loop; this worker times the kernels anyway
            # (its own process, said in the row's settings): is a port worth it?
            pallas_lstm.triton_supported = lambda version=None: True
            settings["triton"] = f"deprecated in jax {jax.__version__}; kernels forced"
    batch_size = len(next(iter(data.values())))
    common = dict(
        batch_size=batch_size,
        learning_rate=LEARNING_RATE,
        clip_norm=0.0,
        matmul_dtype=matmul_dtype,
        engine=engine,
    )
    weights_B = np.ones((batch_size,), np.float32)
    if spec["kind"] == "charlm":
        from lstm_jax.tasks.charlm import CharLMConfig, CharLMTask
        from lstm_jax.tasks.charlm.task import Windows
        from lstm_jax.tasks.charlm.text import Vocabulary

        hidden = spec["widths"][0]
        config = CharLMConfig(
            window=data["ids"].shape[1] - 1,
            hidden=hidden,
            layers=len(spec["widths"]),
            embed_dim=spec["embed"],
            **common,
        )
        task: Any = CharLMTask(config)
        task.vocab = Vocabulary("".join(chr(33 + i) for i in range(spec["vocab"])))
        batch: Any = Windows(data["ids"], weights_B)

        def logits_fn(p):
            return task.model.apply({"params": p}, data["ids"][:, :-1])[0]
    else:
        from lstm_jax.tasks.sentiment import SentimentConfig, SentimentTask
        from lstm_jax.tasks.sentiment.data import Batch

        task = SentimentTask(SentimentConfig(model=workload, vocab_size=spec["vocab"], **common))
        batch = Batch(data["tokens"], data["lengths"], data["labels"], weights_B)

        def logits_fn(p):
            return task.model.apply({"params": p}, data["tokens"], data["lengths"])

    trainer = Trainer(task)
    params = _as_jax(weights)
    state = trainer.place(step_lib.init_state(params, trainer.optimizer))
    batch = jax.device_put(batch, trainer.split)

    def step(state, batch):  # the library's step, its loss sum turned into the mean
        state, sums = trainer.step_fn(state, batch)
        return state, sums["loss"] / sums["count"]

    def check_fn():
        logits = jax.jit(logits_fn)(params)
        return _check_rows(workload, logits), _jax_loss(workload, logits, data)

    return JaxRunner(
        step,
        state,
        batch,
        params,
        check_fn=check_fn,
        settle=trainer.parallel,
        compiler_options=trainer.compiler_options,
        settings={"devices": trainer.mesh.size, **settings},
    )


def _lstm_jax_lib(
    workload: str, data: dict[str, np.ndarray], weights: dict[str, Any], matmul_dtype: str
) -> Runner:
    """Library use: the model's `apply` in a user's own jitted step (`_plain_jax`), one
    device, no `host` settings and no compiler options."""
    from lstm_jax.models import CharLM, SentimentClassifier

    spec = WORKLOADS[workload]
    dtype = None if matmul_dtype == "float32" else matmul_dtype
    if spec["kind"] == "charlm":
        width = spec["widths"][0]
        lm = CharLM(spec["vocab"], width, len(spec["widths"]), spec["embed"], matmul_dtype=dtype)
        logits_fn = lambda p, b: lm.apply({"params": p}, b["ids"][:, :-1])[0]  # noqa: E731
    else:
        model = SentimentClassifier(spec["vocab"], workload, matmul_dtype=dtype)
        logits_fn = lambda p, b: model.apply({"params": p}, b["tokens"], b["lengths"])  # noqa: E731
    settings = {"devices": 1, "jit": "plain jax.jit", "matmul_dtype": matmul_dtype}
    return _plain_jax(workload, data, _as_jax(weights), logits_fn, settings)


def _flax_lstm(cell: dict[str, np.ndarray]) -> dict[str, Any]:
    """Our `(in, 4H)` / `(H, 4H)` / `(4H,)` LSTM weights as `nn.OptimizedLSTMCell`'s
    per-gate Dense layers (`ii`, `hi`, ...; gates i, f, g, o)."""
    hidden = cell["recurrent_kernel"].shape[0]
    out: dict[str, Any] = {}
    for g, gate in enumerate("ifgo"):
        part = slice(g * hidden, (g + 1) * hidden)
        out[f"i{gate}"] = {"kernel": cell["kernel"][:, part]}
        out[f"h{gate}"] = {"kernel": cell["recurrent_kernel"][:, part], "bias": cell["bias"][part]}
    return out


def _flax(workload: str, data: dict[str, np.ndarray], weights: dict[str, Any]) -> Runner:
    """The same models from Flax's own layers: `nn.RNN(nn.OptimizedLSTMCell)`, and
    `nn.Bidirectional` with `seq_lengths` for the classifiers."""
    import flax.linen as nn
    import jax.numpy as jnp

    spec = WORKLOADS[workload]
    widths = spec["widths"]
    params = dict(weights)
    if spec["kind"] == "charlm":

        class LanguageModel(nn.Module):
            @nn.compact
            def __call__(self, ids):
                x = nn.Embed(spec["vocab"], spec["embed"], name="embed")(ids)
                for depth, width in enumerate(widths):
                    x = nn.RNN(nn.OptimizedLSTMCell(width, name=f"layer_{depth}"))(x)
                return nn.Dense(spec["vocab"], name="head")(x)

        for depth in range(len(widths)):
            params[f"layer_{depth}"] = _flax_lstm(weights[f"layer_{depth}"])
        lm = LanguageModel()
        logits_fn = lambda p, b: lm.apply({"params": p}, b["ids"][:, :-1])  # noqa: E731
    else:

        class Classifier(nn.Module):
            @nn.compact
            def __call__(self, tokens, lengths):
                x = nn.Embed(spec["vocab"], spec["embed"], name="embedding")(tokens)
                for depth, width in enumerate(widths):
                    last = depth == len(widths) - 1
                    name = f"bidirectional_{depth}"  # the cells' params live in this scope
                    layer = nn.Bidirectional(
                        nn.RNN(nn.OptimizedLSTMCell(width, name=f"{name}_forward")),
                        nn.RNN(nn.OptimizedLSTMCell(width, name=f"{name}_backward")),
                        return_carry=last,
                    )
                    if last:  # an LSTM carry is (c, h); keep h of each direction
                        (carry_fwd, carry_bwd), _ = layer(x, seq_lengths=lengths)
                        x = jnp.concatenate([carry_fwd[1], carry_bwd[1]], axis=-1)
                    else:
                        x = layer(x, seq_lengths=lengths)
                x = nn.relu(nn.Dense(spec["dense"], name="dense")(x))
                return nn.Dense(1, name="logits")(x)[:, 0]

        for depth in range(len(widths)):
            layer = params.pop(f"bidirectional_{depth}")
            for direction in ("forward", "backward"):
                params[f"bidirectional_{depth}_{direction}"] = _flax_lstm(layer[direction])
        model = Classifier()
        logits_fn = lambda p, b: model.apply({"params": p}, b["tokens"], b["lengths"])  # noqa: E731
    return _plain_jax(workload, data, _as_jax(params), logits_fn)


def _keras_model(backend: str, workload: str, length: int, *, mask: bool) -> Any:
    """The tutorial's `Sequential` in Keras 3 on `backend` (the worker's `KERAS_BACKEND`)."""
    spec = WORKLOADS[workload]
    if spec["kind"] != "classifier":
        raise Skip("the Keras rows are the tutorial's classifiers; not built for the char LM")
    try:
        import keras
    except ImportError as e:
        raise Skip(f"keras not installed ({e}); pip install -e '.[bench]'") from e
    if keras.backend.backend() != backend:
        raise Skip(f"keras runs on {keras.backend.backend()!r}, not {backend!r} (KERAS_BACKEND)")
    layers: list[Any] = [
        keras.Input((length,), dtype="int32"),
        keras.layers.Embedding(spec["vocab"], spec["embed"], mask_zero=mask),
    ]
    widths = spec["widths"]
    for depth, width in enumerate(widths):
        last = depth == len(widths) - 1
        layers.append(
            keras.layers.Bidirectional(keras.layers.LSTM(width, return_sequences=not last))
        )
    layers += [keras.layers.Dense(spec["dense"], activation="relu"), keras.layers.Dense(1)]
    return keras.Sequential(layers)


def _keras(
    workload: str, data: dict[str, np.ndarray], weights: dict[str, Any], *, mask: bool
) -> Runner:
    model = _keras_model("jax", workload, data.get("tokens", data.get("ids")).shape[1], mask=mask)
    import jax
    import optax

    from lstm_jax import interop

    model.set_weights(interop.to_keras(weights, workload))
    optimizer = optax.adam(LEARNING_RATE)

    def step(state, batch):
        trainable, non_trainable, opt_state = state

        def loss_fn(tv):
            logits, ntv = model.stateless_call(tv, non_trainable, batch["tokens"], training=True)
            return _jax_loss(workload, logits[:, 0], batch), ntv

        (loss, ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return (optax.apply_updates(trainable, updates), ntv, opt_state), loss

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def check_fn():
        logits, _ = model.stateless_call(trainable, non_trainable, data["tokens"])
        return logits[:, 0], _jax_loss(workload, logits[:, 0], data)

    state = (trainable, non_trainable, optimizer.init(trainable))
    return JaxRunner(step, state, data, trainable, check_fn=check_fn)


class KerasTFRunner(Runner):
    """Keras 3 on TensorFlow: the tutorial's model, `compile(Adam, binary cross-entropy from
    logits)` and `train_on_batch`, which runs the same compiled train function as
    `model.fit` (Keras' defaults, `jit_compile="auto"`). Each call returns the loss to the
    host, so every step ends synchronised."""

    def __init__(self, workload: str, data: dict[str, np.ndarray], weights: dict[str, Any]):
        if WORKLOADS[workload]["kind"] != "classifier":
            raise Skip("the Keras rows are the tutorial's classifiers; not built for the char LM")
        try:
            import tensorflow  # noqa: F401  (Keras' backend; a clear skip where it is missing)
        except ImportError as e:
            raise Skip(f"tensorflow not installed ({e}); pip install -e '.[bench-tf]'") from e
        import keras

        from lstm_jax import interop

        self.model = _keras_model("tensorflow", workload, data["tokens"].shape[1], mask=True)
        self.model.set_weights(interop.to_keras(weights, workload))
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
        self.model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=self.loss_fn)
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

    def check(self) -> tuple[np.ndarray, float]:
        logits = np.asarray(self.model(self.tokens, training=False))[:, 0]
        return logits, float(np.asarray(self.loss_fn(self.labels, logits)))


def _jax_cudnn(workload: str, data: dict[str, np.ndarray], weights: dict[str, Any]) -> Runner:
    """`jax.experimental.rnn.lstm` (cuDNN) with its own initial weights: its flat weight
    layout is not loaded from the shared weights, so its row is not checked."""
    import jax
    import jax.numpy as jnp

    if jax.default_backend() != "gpu":
        raise Skip(
            f"jax.experimental.rnn.lstm needs cuDNN (a GPU); backend is {jax.default_backend()}"
        )
    if WORKLOADS[workload]["kind"] != "classifier":
        raise Skip("built for the classifiers only")
    from jax.experimental import rnn

    spec = WORKLOADS[workload]
    widths = spec["widths"]
    keys = iter(jax.random.split(jax.random.key(0), 2 + len(widths)))
    params: dict[str, Any] = {"embedding": jnp.asarray(weights["embedding"]["embedding"])}
    features = spec["embed"]
    for depth, width in enumerate(widths):
        params[f"lstm_{depth}"] = rnn.init_lstm_weight(next(keys), features, width, 1, True)
        features = 2 * width
    params["dense"] = _as_jax(weights["dense"])
    params["logits"] = _as_jax(weights["logits"])

    def logits_fn(p, batch):
        x = p["embedding"][batch["tokens"]]
        size = batch["tokens"].shape[0]
        for depth, width in enumerate(widths):
            zeros = jnp.zeros((2, size, width), x.dtype)
            out = rnn.lstm(
                x, zeros, zeros, p[f"lstm_{depth}"], batch["lengths"],
                input_size=x.shape[-1], hidden_size=width, num_layers=1,
                dropout=0.0, bidirectional=True,
            )  # fmt: skip
            x, h_n = out[0], out[1]
        x = jnp.concatenate([h_n[0], h_n[1]], axis=-1)
        x = jax.nn.relu(x @ p["dense"]["kernel"] + p["dense"]["bias"])
        return (x @ p["logits"]["kernel"] + p["logits"]["bias"])[:, 0]

    runner = _plain_jax(workload, data, params, logits_fn)
    runner.check_fn = None
    return runner


class TorchRunner(Runner):
    """`nn.LSTM` models in PyTorch with `torch.optim.Adam`. `best`: flush denormals to zero
    (`torch.set_flush_denormal(True)`: this Intel CPU handles them in microcode, and a
    last-state classifier's backward pass decays into them) and one thread per available
    core; otherwise PyTorch's defaults. `autocast`: the forward pass under bfloat16
    autocast, the loss in float32. `layout`: the classifiers' (`torch_model`)."""

    def __init__(
        self,
        workload: str,
        data: dict[str, np.ndarray],
        weights: dict[str, Any],
        *,
        layout: str = "packed",
        best: bool = True,
        autocast: bool = False,
    ):
        try:
            import torch
        except ImportError as e:
            raise Skip(f"torch not installed ({e}); pip install -e '.[bench]'") from e
        spec = WORKLOADS[workload]
        charlm = spec["kind"] == "charlm"
        if charlm and layout != "packed":
            raise Skip("a char-LM window has no padding: the same as the torch row")
        self.torch = torch
        self.settings = torch_settings(
            torch, best, layout=None if charlm else layout, autocast=autocast
        )
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.autocast = autocast
        self.model = torch_model(torch, spec, layout=layout).to(self.device)
        load_torch(self.model, weights, spec, torch, layout)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
        if charlm:
            ids = torch.from_numpy(data["ids"]).long().to(self.device)
            self.inputs, self.targets, self.lengths = ids[:, :-1], ids[:, 1:], None
        else:
            self.inputs = torch.from_numpy(data["tokens"]).long().to(self.device)
            self.lengths = torch.from_numpy(data["lengths"]).long()  # packing wants the CPU
            self.targets = torch.from_numpy(data["labels"]).float().to(self.device)
        self.charlm = charlm
        self.params = sum(p.numel() for p in self.model.parameters())
        self._loss = None

    def _forward(self) -> tuple[Any, Any]:
        functional = self.torch.nn.functional
        with self.torch.autocast(self.device.type, self.torch.bfloat16, enabled=self.autocast):
            logits = self.model(self.inputs, self.lengths)
        logits = logits.float()
        if self.charlm:
            flat = logits.reshape(-1, logits.shape[-1])
            return logits, functional.cross_entropy(flat, self.targets.reshape(-1))
        return logits, functional.binary_cross_entropy_with_logits(logits, self.targets)

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        _, loss = self._forward()
        loss.backward()
        self.optimizer.step()
        self._loss = loss

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def loss(self) -> float:
        return float(self._loss.detach().cpu())

    def check(self) -> tuple[np.ndarray, float]:
        with self.torch.no_grad():
            logits, loss = self._forward()
        rows = logits[:CHECK_ROWS] if self.charlm else logits
        return rows.cpu().numpy(), float(loss)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"torch_threads": self.torch.get_num_threads()}
        if self.device.type == "cuda":
            out["device_peak_mb"] = self.torch.cuda.max_memory_allocated() / 2**20
        return out


LAYOUTS = ("packed", "padded", "reversed")


def torch_model(torch: Any, spec: dict[str, Any], *, layout: str, dropout: float = 0.0) -> Any:
    """The workload `spec` as a PyTorch module: `model(inputs, lengths_cpu)` gives the char
    LM's `[B, T, V]` logits, or a classifier's `[B]` with its recurrent layers over
    `layout`: "packed" (`pack_padded_sequence` into `nn.LSTM(bidirectional=True)`),
    "padded" (the padded tensor as it is: right only for full-length rows) or "reversed"
    (one `nn.LSTM` per direction on padded tensors, the backward one on each row's real
    steps reversed in place, outputs read at each row's last real step: padding-correct
    and on PyTorch's fast path, which packed rows of unequal lengths leave on a CPU).
    `dropout`: the library's word and output dropout, in training mode."""
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence

    widths = spec["widths"]

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(spec["vocab"], spec["embed"])
            features, lstms = spec["embed"], []
            for width in widths:
                if layout == "reversed":
                    pair = [nn.LSTM(features, width, batch_first=True) for _ in range(2)]
                    lstms.append(nn.ModuleList(pair))
                else:
                    lstms.append(nn.LSTM(features, width, batch_first=True, bidirectional=True))
                features = 2 * width
            self.lstms = nn.ModuleList(lstms)
            self.dense = nn.Linear(features, spec["dense"])
            self.logits = nn.Linear(spec["dense"], 1)

        def forward(self, tokens, lengths_cpu):
            x = self.embedding(tokens)
            if dropout and self.training:  # whole token vectors, as the library's word dropout
                keep = torch.empty((*x.shape[:2], 1), device=x.device).bernoulli_(1 - dropout)
                x = x * keep / (1 - dropout)
            if layout == "reversed":
                x = self._reversed(x, lengths_cpu.to(x.device))
            else:
                if layout == "packed":
                    x = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
                for lstm in self.lstms:
                    x, (h_n, _) = lstm(x)
                x = torch.cat([h_n[0], h_n[1]], dim=-1)  # forward last real step, backward first
            x = nn.functional.dropout(x, dropout, self.training)
            return self.logits(torch.relu(self.dense(x)))[:, 0]

        def _reversed(self, x, lengths):
            steps = torch.arange(x.shape[1], device=x.device)[None]
            mirror = lengths[:, None] - 1 - steps  # row b's step t <-> its step len_b - 1 - t
            index = torch.where(mirror >= 0, mirror, steps)  # padding stays where it is

            def flip(y):
                return torch.gather(y, 1, index[..., None].expand(-1, -1, y.shape[-1]))

            rows, last = torch.arange(x.shape[0], device=x.device), (lengths - 1).clamp(min=0)
            for depth, (forward, backward) in enumerate(self.lstms):
                ahead, behind = forward(x)[0], backward(flip(x))[0]
                if depth == len(self.lstms) - 1:
                    return torch.cat([ahead[rows, last], behind[rows, last]], dim=-1)
                x = torch.cat([ahead, flip(behind)], dim=-1)

    class LanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(spec["vocab"], spec["embed"])
            self.lstm = nn.LSTM(spec["embed"], widths[0], len(widths), batch_first=True)
            self.head = nn.Linear(widths[0], spec["vocab"])

        def forward(self, ids, _lengths):
            return self.head(self.lstm(self.embedding(ids))[0])

    return LanguageModel() if spec["kind"] == "charlm" else Classifier()


def load_torch(
    model: Any, weights: dict[str, Any], spec: dict[str, Any], torch: Any, layout: str
) -> None:
    """Copy the shared weights into a `TorchRunner` model: `nn.LSTM` keeps `(4H, in)`
    matrices (ours transposed, gates i, f, g, o as ours) and two biases per layer (ours in
    `bias_ih`, zeros in `bias_hh`); `nn.Linear` keeps `(out, in)`."""
    tensors: dict[str, np.ndarray] = {}
    if spec["kind"] == "charlm":
        tensors["embedding.weight"] = weights["embed"]["embedding"]
        cells = {f"lstm.{{}}_l{d}": weights[f"layer_{d}"] for d in range(len(spec["widths"]))}
        dense = {"head": weights["head"]}
    else:
        tensors["embedding.weight"] = weights["embedding"]["embedding"]
        cells = {}
        for d in range(len(spec["widths"])):
            layer = weights[f"bidirectional_{d}"]
            if layout == "reversed":  # one nn.LSTM per direction
                cells[f"lstms.{d}.0.{{}}_l0"] = layer["forward"]
                cells[f"lstms.{d}.1.{{}}_l0"] = layer["backward"]
            else:
                cells[f"lstms.{d}.{{}}_l0"] = layer["forward"]
                cells[f"lstms.{d}.{{}}_l0_reverse"] = layer["backward"]
        dense = {"dense": weights["dense"], "logits": weights["logits"]}
    for name, cell in cells.items():
        tensors[name.format("weight_ih")] = cell["kernel"].T
        tensors[name.format("weight_hh")] = cell["recurrent_kernel"].T
        tensors[name.format("bias_ih")] = cell["bias"]
        tensors[name.format("bias_hh")] = np.zeros_like(cell["bias"])
    for name, layer in dense.items():
        tensors[f"{name}.weight"] = layer["kernel"].T
        tensors[f"{name}.bias"] = layer["bias"]
    state = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in tensors.items()}
    model.load_state_dict(state, strict=True)


def torch_settings(torch: Any, best: bool, *, layout: str | None, autocast: bool) -> dict[str, Any]:
    """PyTorch at its best (`best`: denormals flushed to zero, a thread per core) or at its
    defaults; returns what it runs with, for the JSON."""
    if best:
        torch.set_flush_denormal(True)
        torch.set_num_threads(_cores())
    return {
        "flush_denormal": best,
        "threads": torch.get_num_threads(),
        "layout": layout,
        "autocast": "bfloat16" if autocast else None,
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


BUILDERS: dict[str, Callable[..., Runner]] = {
    "lstm_jax": lambda w, d, p: _lstm_jax(w, d, p, "fused"),
    "lstm_jax-1dev": lambda w, d, p: _lstm_jax(w, d, p, "fused"),
    "lstm_jax-scan": lambda w, d, p: _lstm_jax(w, d, p, "scan"),
    "lstm_jax-bf16": lambda w, d, p: _lstm_jax(w, d, p, "fused", matmul_dtype="bfloat16"),
    "lstm_jax-lib": lambda w, d, p: _lstm_jax_lib(w, d, p, "float32"),
    "lstm_jax-lib-bf16": lambda w, d, p: _lstm_jax_lib(w, d, p, "bfloat16"),
    "lstm_jax-pallas": lambda w, d, p: _lstm_jax(w, d, p, "pallas"),
    REMAT: lambda w, d, p: _lstm_jax(w, d, p, "remat"),
    "flax": _flax,
    "keras-jax": lambda w, d, p: _keras(w, d, p, mask=True),
    "keras-jax-nomask": lambda w, d, p: _keras(w, d, p, mask=False),
    "keras-tf": KerasTFRunner,
    "torch": lambda w, d, p: TorchRunner(w, d, p),
    "torch-nopack": lambda w, d, p: TorchRunner(w, d, p, layout="padded"),
    "torch-reversed": lambda w, d, p: TorchRunner(w, d, p, layout="reversed"),
    "torch-bf16": lambda w, d, p: TorchRunner(w, d, p, autocast=True),
    "torch-default": lambda w, d, p: TorchRunner(w, d, p, best=False),
    "jax-cudnn": _jax_cudnn,
}
# Rows of `Trainer`'s step: their workers split the CPU with `host.configure` first.
TRAINER_ROWS = ("lstm_jax", "lstm_jax-1dev", "lstm_jax-scan", "lstm_jax-bf16", "lstm_jax-pallas")
TRAINER_ROWS += (REMAT,)


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


def _float32_exact_on_gpu(impl: str, runner: Runner) -> None:
    """A float32 JAX row on a GPU runs its matmuls at full float32 precision: JAX's default
    there rounds their inputs to TF32 (logits 2e-4 off the reference), while the float32
    peers (cuDNN's LSTM in PyTorch) compute in float32. Set before the first trace."""
    import jax

    if precision(impl) == "float32" and jax.default_backend() == "gpu":
        jax.config.update("jax_default_matmul_precision", "highest")
        runner.settings["matmul_precision"] = "highest (no TF32)"


def _serve_cell(impl: str, workload: str, batch: int, length: int, seed: int, weights: str) -> None:
    from benchmarks.reference import unflatten

    send = _worker_channel()
    counter = None
    with np.load(weights) as flat:
        loaded = unflatten(flat)
    try:
        runner = BUILDERS[impl](workload, random_batch(batch, length, seed, workload), loaded)
        if runner.is_jax:
            counter = _CompileCounter()
            _float32_exact_on_gpu(impl, runner)
    except Skip as e:
        send({"status": "skipped", "reason": str(e)})
        return
    send({"status": "ready", "params": runner.params, "settings": runner.settings})
    for line in sys.stdin:
        command = json.loads(line)
        name = command["cmd"]
        if name == "quit":
            return
        if name == "check":
            checked = runner.check()
            if checked is None:
                send({"logits": None, "loss": None})
            else:
                send({"logits": checked[0].tolist(), "loss": checked[1]})
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


def _serve_imdb(
    archive: str | None,
    examples: int | None,
    epochs: int,
    matmul_dtype: str,
    dump: str | None = None,
) -> None:
    """Time `epochs` epochs of the main job's single BiLSTM (config `imdb_bilstm`, with
    `matmul_dtype` matmul inputs) over all 25,000 training reviews (the validation slice
    included), whole reviews, after a warm-up of one step per padded shape. The first
    epoch still meets each shape's first steps after compilation; the later ones are
    what every epoch of a run after the first costs. `dump`: also write every epoch's
    batches there, with the config's dropout, clipping and learning rate, for a peer to
    train on the same ones (`_serve_imdb_torch`)."""
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
    if dump:
        arrays = {
            f"{e}/{i}/{field}": getattr(batch, field)
            for e, epoch in enumerate(plan)
            for i, batch in enumerate(epoch)
            for field in batch._fields
        }
        c = task.config
        setup = dict(dropout=c.dropout, clip_norm=c.clip_norm, learning_rate=c.learning_rate)
        np.savez(dump, **arrays, **{k: np.asarray(v) for k, v in setup.items()})
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


def _serve_imdb_torch(batches_file: str, matmul_dtype: str, layout: str) -> None:
    """The IMDB epochs of `_serve_imdb`, the same batches of the same token ids (read from
    its dump), through the bilstm in PyTorch at its best: `layout` (`torch_model`), the
    config's word and output dropout, gradient-norm clipping and Adam at its learning rate
    (the cosine decay left out), bfloat16 autocast where `matmul_dtype` says so. Filler
    rows (weight 0) are dropped; a review with no tokens keeps one padding token."""
    send = _worker_channel()
    try:
        import torch
    except ImportError as e:
        send(
            {"status": "skipped", "reason": f"torch not installed ({e}); pip install -e '.[bench]'"}
        )
        return
    autocast = matmul_dtype == "bfloat16"
    settings = torch_settings(torch, True, layout=layout, autocast=autocast)
    with np.load(batches_file) as saved:
        setup = {k: float(saved[k]) for k in ("dropout", "clip_norm", "learning_rate")}
        fields = {}
        for key in saved.files:
            if key.count("/") == 2:
                epoch, index, field = key.split("/")
                fields.setdefault((int(epoch), int(index)), {})[field] = saved[key]
    plan: list[list[tuple[Any, Any, Any]]] = []
    for epoch, index in sorted(fields):
        batch = fields[epoch, index]
        real = batch["weights"] > 0
        lengths = np.maximum(batch["lengths"][real], 1)
        tokens = batch["tokens"][real][:, : int(lengths.max())]
        if index == 0:
            plan.append([])
        plan[epoch].append((
            torch.from_numpy(tokens.astype(np.int64)),
            torch.from_numpy(lengths.astype(np.int64)),
            torch.from_numpy(batch["labels"][real].astype(np.float32)),
        ))  # fmt: skip
    model = torch_model(torch, WORKLOADS["bilstm"], layout=layout, dropout=setup["dropout"])
    optimizer = torch.optim.Adam(model.parameters(), lr=setup["learning_rate"])

    def step(tokens, lengths, labels):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            logits = model(tokens, lengths)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        loss.backward()
        if setup["clip_norm"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), setup["clip_norm"])
        optimizer.step()
        return loss

    start = time.perf_counter()
    shapes = {}
    for batch in plan[0]:
        shapes.setdefault(tuple(batch[0].shape), batch)
    for batch in shapes.values():  # as ours: one step per padded shape first
        step(*batch)
    warmup_s = time.perf_counter() - start
    epochs_s = []
    for epoch in plan:
        start = time.perf_counter()
        for batch in epoch:
            loss = step(*batch)
        float(loss)
        epochs_s.append(time.perf_counter() - start)
    reviews = sum(len(batch[2]) for batch in plan[-1])
    send({
        "status": "ok",
        "layout": layout,
        "settings": settings,
        "examples": reviews,
        "batches": len(plan[-1]),
        "warmup_s": warmup_s,
        "epochs_s": epochs_s,
        "epoch_s": epochs_s[-1],
        "reviews_per_s": reviews / epochs_s[-1],
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
    root = str(Path(__file__).resolve().parent.parent)  # workers import benchmarks.reference
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several processes share a GPU
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _keras_backend(env: dict[str, str], impl: str) -> dict[str, str]:
    """`env` with the Keras backend `impl` needs (Keras reads it once, at import)."""
    return {**env, "KERAS_BACKEND": "tensorflow" if impl == "keras-tf" else "jax"}


def _run_cell(
    workload: str, length: int, impls: Sequence[str], options: argparse.Namespace, log
) -> list[dict[str, Any]]:
    """All implementations on one (workload, length): load the shared weights and check
    each against the reference, warm up each, then alternate timed rounds."""
    from benchmarks import reference

    rows = {
        impl: {
            "workload": workload,
            "length": length,
            "batch": options.batch,
            "impl": impl,
            "precision": precision(impl),
        }
        for impl in impls
    }
    spec = WORKLOADS[workload]
    weights = reference.make_weights(spec)
    expected = reference.forward(
        weights, spec["kind"], random_batch(options.batch, length, 0, workload)
    )
    folder = tempfile.TemporaryDirectory()
    weights_file = Path(folder.name) / "weights.npz"
    np.savez(weights_file, **reference.flatten(weights))
    args = ["cell", "--workload", workload, "--batch", str(options.batch), "--length", str(length)]
    args += ["--malloc", options.malloc, "--weights", str(weights_file)]
    workers = {  # start in parallel
        impl: Worker(
            [*args, "--impl", impl], _keras_backend(_worker_env(impl, options.malloc), impl)
        )
        for impl in impls
    }
    alive: dict[str, Worker] = {}

    def fail(impl: str, error: Exception | str, status: str = "error") -> None:
        rows[impl].update(status=status, error=str(error))
        workers[impl].kill()
        alive.pop(impl, None)
        log(f"  {impl}: {status}: {str(error).splitlines()[0]}")

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
                continue
            rows[impl].update(
                status="ok", params=message["params"], settings=message["settings"], rounds_ms=[]
            )
            try:  # the same computation: logits and loss of the shared weights
                got = worker.call("check")
            except WorkerError as e:
                fail(impl, e)
                continue
            if got["logits"] is None:
                rows[impl]["checked"] = False
            else:
                wrong = reference.check(expected, got["logits"], got["loss"], precision(impl))
                if wrong:
                    fail(impl, f"not the reference computation: {wrong}", "mismatch")
                    continue
                rows[impl].update(checked=True, check_loss=got["loss"])
            alive[impl] = worker
        steps: dict[str, int] = {}
        for impl, worker in list(alive.items()):
            try:
                warm = worker.call("warmup", steps=options.warmup)
            except WorkerError as e:
                fail(impl, e)
                continue
            rows[impl].update(warm)
            wrong = rows[impl]["checked"] and reference.check_loss(
                expected[1], warm["loss0"], precision(impl)
            )
            if wrong:  # the timed step itself computes the reference loss first
                fail(impl, f"first training step: {wrong}", "mismatch")
                continue
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
        folder.cleanup()
    flops = step_flops(workload, options.batch, length)
    for row in rows.values():
        if row.get("status") == "ok" and row["rounds_ms"]:
            ms = statistics.median(row["rounds_ms"])
            row.update(
                ms_per_step=ms,
                examples_per_s=options.batch / (ms / 1e3),
                flops=flops,
                gflops_per_s=flops / (ms / 1e3) / 1e9,
            )
        if row.get("status") == "ok":
            row["params_expected"] = expected_params(workload)
    timed = {impl: row["ms_per_step"] for impl, row in rows.items() if "ms_per_step" in row}
    for row in rows.values():
        if "ms_per_step" in row and not row["impl"].startswith(OURS):
            for column, ours in (("vs_whole", WHOLE), ("vs_library", LIBRARY)):
                mine = timed.get(ours[row["precision"]])
                if mine:
                    row[column] = row["ms_per_step"] / mine
    return list(rows.values())


def comparisons(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (workload, T, precision): ours as the whole machine runs it (`WHOLE`) and as a
    library (`LIBRARY`), each against the fastest peer row of that precision that ran at
    its best and passed the check; `ratio` above 1: ours is faster."""
    out = []
    cells = dict.fromkeys((r["workload"], r["length"]) for r in rows)
    for workload, length in cells:
        cell = [r for r in rows if (r["workload"], r["length"]) == (workload, length)]
        timed = {r["impl"]: r for r in cell if "ms_per_step" in r}
        for dtype in ("float32", "bfloat16"):
            peers = [
                r
                for r in timed.values()
                if not r["impl"].startswith(OURS)
                and r["precision"] == dtype
                and r["impl"] not in DEFAULTS
                and r.get("checked")
            ]
            if not peers:
                continue
            fastest = min(peers, key=lambda r: r["ms_per_step"])
            for name, ours in (("whole machine", WHOLE[dtype]), ("library use", LIBRARY[dtype])):
                if ours in timed:
                    out.append({
                        "workload": workload, "length": length, "precision": dtype,
                        "comparison": name, "ours": ours, "ours_ms": timed[ours]["ms_per_step"],
                        "peer": fastest["impl"], "peer_ms": fastest["ms_per_step"],
                        "ratio": fastest["ms_per_step"] / timed[ours]["ms_per_step"],
                    })  # fmt: skip
    return out


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


# The CPU features that decide the matmuls' speed (of /proc/cpuinfo's flags).
CPU_FLAGS = ("fma", "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def machine_info() -> dict[str, Any]:
    cpu, flags = None, None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu is None:
                cpu = value.strip()
            elif key.strip() == "flags" and flags is None:
                flags = [f for f in CPU_FLAGS if f in value.split()]
    except OSError:
        pass
    cpu = cpu or platform.processor() or None
    return {
        "cpu": cpu,
        "cpu_flags": flags,
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
    parser.add_argument(
        "--workloads", type=_csv(str, tuple(WORKLOADS)), default=list(WORKLOADS),
        help=f"from {','.join(WORKLOADS)}",
    )  # fmt: skip
    parser.add_argument(
        "--lengths", type=_csv(int), default=[128, 256, 1024], help="the classifiers' T values"
    )
    parser.add_argument(
        "--windows", type=_csv(int), default=[128], help="the char LM's T values (its window)"
    )
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
    parser.add_argument(
        "--imdb-torch", type=_csv(str, LAYOUTS), default=["reversed"],
        help="with torch in --impls: the same IMDB epochs in PyTorch with these layouts "
        "(packed: rows of unequal lengths leave PyTorch's fast CPU path, about 10x slower)",
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
    for name in ("lengths", "windows"):
        if any(t < 1 for t in getattr(options, name)):
            raise ValueError(f"--{name} must be positive, got {getattr(options, name)}")


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
        options.lengths = options.windows = [32]
        options.rounds, options.steps, options.warmup = 1, 2, 1
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
        "flops_formula": "3 * (sum_layers D * 2*B*T*(E+H)*4H + charlm's 2*B*T*H*V), "
        "D = 2 directions (classifiers) or 1 (charlm)",
    }
    log("measuring the float32 matmul peak ...")
    results["peak"] = _single(["peak"], options.malloc)
    peak = results["peak"].get("jax_default_gflops")
    results["cells"] = []
    for workload in options.workloads:
        lengths = options.windows if WORKLOADS[workload]["kind"] == "charlm" else options.lengths
        for length in lengths:
            log(f"{workload} T={length} B={options.batch}")
            rows = _run_cell(workload, length, impls, options, log)
            for row in rows:
                if peak and row.get("gflops_per_s"):
                    row["peak_fraction"] = row["gflops_per_s"] / peak
            results["cells"].extend(rows)
            results["comparisons"] = comparisons(results["cells"])
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
        with tempfile.TemporaryDirectory() as folder:
            batches = str(Path(folder) / "batches.npz")
            layouts = options.imdb_torch if "torch" in impls else []
            dump = ["--dump", batches] if layouts else []
            results["imdb"] = ours = _single([*args, *dump], options.malloc)
            results["imdb_torch"] = []
            for layout in layouts if ours.get("status") == "ok" else []:
                log(f"the same IMDB epochs in PyTorch, {layout} ...")
                peer = ["imdb-torch", "--batches", batches, "--layout", layout]
                peer += ["--matmul-dtype", options.imdb_matmul_dtype]
                theirs = _single(peer, options.malloc)
                if theirs.get("status") == "ok":
                    theirs["ours_vs_torch"] = ours["reviews_per_s"] / theirs["reviews_per_s"]
                results["imdb_torch"].append(theirs)
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
    ("precision", "precision"),
    ("checked", "checked"),
    ("ms/step", "ms_per_step"),
    ("examples/s", "examples_per_s"),
    ("÷ ours", "vs_whole"),
    ("÷ ours lib", "vs_library"),
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
    if key in ("vs_whole", "vs_library"):
        return f"{value:.2f}"
    if key == "checked":
        return "yes" if value else "no"
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
        f"**{results['date']}** · {machine['cpu']} "
        f"({' '.join(machine.get('cpu_flags') or [])}) · {machine['cpu_count']} CPUs · "
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
    if results.get("comparisons"):
        lines += [
            "",
            "| workload | T | precision | comparison | ours ms | fastest peer | ms | ratio |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in results["comparisons"]:
            lines.append(
                f"| {c['workload']} | {c['length']} | {c['precision']} | {c['comparison']} | "
                f"{c['ours']} {_cell('', c['ours_ms'])} | {c['peer']} | "
                f"{_cell('', c['peer_ms'])} | {c['ratio']:.2f}× |"
            )
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
        for peer in results.get("imdb_torch", []):
            if peer.get("status") != "ok":
                lines.append(f"IMDB epoch in PyTorch: {peer.get('status')}: {_why(peer)}")
                continue
            epochs = ", ".join(f"{e:.1f}" for e in peer["epochs_s"])
            settings = peer["settings"]
            lines.append(
                f"The same batches in PyTorch ({settings['layout']}, {settings['threads']} "
                f"threads, flush-denormal, autocast {settings['autocast']}): {epochs} s, "
                f"{peer['reviews_per_s']:,.0f} reviews/s (the last); ours "
                f"{peer['ours_vs_torch']:.2f}x its rate"
            )
    else:
        lines.append(
            f"IMDB epoch: {imdb.get('status')}: "
            f"{imdb.get('reason') or (imdb.get('error') or '').splitlines()[0]}"
        )
    return "\n".join(lines)


def _why(row: dict[str, Any]) -> str:
    return row.get("reason") or (row.get("error") or "").splitlines()[0]


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
    parser.add_argument("role", choices=["cell", "peak", "imdb", "imdb-torch"])
    parser.add_argument("--impl", choices=list(BUILDERS))
    parser.add_argument("--workload", choices=list(WORKLOADS))
    parser.add_argument("--batch", type=int)
    parser.add_argument("--length", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="the shared weights (.npz of reference.flatten)")
    parser.add_argument("--archive")
    parser.add_argument("--examples", type=int)
    parser.add_argument("--dump", help="imdb: also save the epochs' batches here (.npz)")
    parser.add_argument("--batches", help="imdb-torch: the batches imdb saved")
    parser.add_argument("--layout", choices=LAYOUTS, default="reversed")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--matmul-dtype", choices=MATMUL_DTYPES, default="float32")
    parser.add_argument("--malloc", choices=MALLOC, default="tuned")
    args = parser.parse_args(argv)
    if args.malloc == "tuned":  # every implementation, before any allocation of note
        _tune_malloc()
    if args.role == "imdb" or (args.role == "cell" and args.impl in TRAINER_ROWS):
        from lstm_jax import host

        host.configure(1 if args.impl == "lstm_jax-1dev" else None)
    if args.role == "cell":
        _serve_cell(args.impl, args.workload, args.batch, args.length, args.seed, args.weights)
    elif args.role == "peak":
        _serve_peak()
    elif args.role == "imdb":
        _serve_imdb(args.archive, args.examples, args.epochs, args.matmul_dtype, args.dump)
    else:
        _serve_imdb_torch(args.batches, args.matmul_dtype, args.layout)


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
