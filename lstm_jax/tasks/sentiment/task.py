"""Training, evaluation and checkpoints of the sentiment classifiers.

`train_step(state, batch) -> (state, metrics)` is pure and importable; `Trainer` jits it
once with the state donated. Where there are several devices (a CPU host split into one
device per core by `lstm_jax.host.configure`, or several GPUs), `Trainer` runs the step
data-parallel: `shard_map` gives each device a slice of the batch, gradients and metrics are
summed across them, and every device applies the same update. Metrics come back as sums
(`loss`, `correct`, `count`) and the host reads them only when it logs. A run lives in one
directory:

    workdir/config.json        the `TrainConfig` (rebuilds the model from the directory alone)
    workdir/tokenizer.json     the subword vocabulary learnt from the training texts
    workdir/checkpoints/<step> Orbax checkpoints: every epoch and on Ctrl-C / SIGTERM
    workdir/best/<step>        the parameters with the best validation accuracy so far
    workdir/history.json/.png  per-epoch loss and accuracy
    workdir/results.json       test metrics; its presence marks a finished run
"""

from __future__ import annotations

import contextlib
import functools
import json
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from lstm_jax import config as config_lib
from lstm_jax import data as data_lib
from lstm_jax import host
from lstm_jax.config import TrainConfig
from lstm_jax.models import SentimentClassifier
from lstm_jax.tokenizer import SubwordTokenizer

TOKENIZER_FILE = "tokenizer.json"
HISTORY_FILE = "history.json"
RESULTS_FILE = "results.json"
LOG_EVERY = 20  # steps between progress-bar updates (on one device the only host syncs)
DATA_AXIS = "data"  # the mesh axis the batch is split along


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (finished, foreign or missing)."""


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint at `step`."""

    def __init__(self, step: int, workdir: Path):
        super().__init__(
            f"interrupted at step {step}; checkpoint saved in {workdir}. "
            f"Continue with: lstm-jax train --workdir {workdir} --resume"
        )
        self.step = step


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any


# ----------------------------------------------------------------------------------
# The pure pieces: optimizer, loss, steps.
# ----------------------------------------------------------------------------------
def make_optimizer(config: TrainConfig, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """The one place the optimizer is built: optional global-norm clip, then Adam with the
    config's learning-rate schedule (cosine: to 0 over `epochs * steps_per_epoch` steps)."""
    rate = config.learning_rate
    if config.schedule == "cosine":
        rate = optax.cosine_decay_schedule(rate, config.epochs * steps_per_epoch)
    parts = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm else []
    return optax.chain(*parts, optax.adam(rate))


def make_model(config: TrainConfig) -> SentimentClassifier:
    return SentimentClassifier(
        config.vocab_size,
        config.model,
        dropout_rate=config.dropout,
        matmul_dtype=config.matmul_dtype,
    )


def init_state(config: TrainConfig, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh state from the config's seed (Keras' initialisation of every layer)."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    params = make_model(config).init(
        jax.random.key(config.seed), tokens, jnp.ones((1,), jnp.int32)
    )["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def _metrics(logits_B, batch) -> dict[str, jax.Array]:
    labels = batch.labels.astype(jnp.float32)
    losses = optax.sigmoid_binary_cross_entropy(logits_B, labels)
    correct = ((logits_B > 0) == (batch.labels == 1)).astype(jnp.float32)
    return {
        "loss": jnp.sum(losses * batch.weights),
        "correct": jnp.sum(correct * batch.weights),
        "count": jnp.sum(batch.weights),
    }


def _across(axis_name: str | None, tree):
    """`tree` summed over the devices of `axis_name` (itself when there is no axis)."""
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def train_step(
    state: TrainState,
    batch: data_lib.Batch,
    *,
    model: SentimentClassifier,
    optimizer: optax.GradientTransformation,
    seed: int = 0,
    axis_name: str | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step on the mean loss of the batch's real rows (filler rows weigh 0).

    Dropout's key is `fold_in(key(seed), step)`: a resumed run draws the same masks.
    Under `shard_map` over `axis_name`, `batch` is this device's slice: the loss is still
    the mean over the whole batch, and the dropout key is folded with the device's index so
    the slices draw different masks. The gradient of the loss *sum* is taken on each slice
    and divided by the row count after one sum over the axis: the step's only collective
    comes after all its compute (see `Trainer._settled` for why that matters on a CPU).
    """
    dropout_key = jax.random.fold_in(jax.random.key(seed), state.step)
    if axis_name is not None:
        dropout_key = jax.random.fold_in(dropout_key, jax.lax.axis_index(axis_name))

    def loss_fn(params):
        logits = model.apply(
            {"params": params},
            batch.tokens,
            batch.lengths,
            train=True,
            rngs={"dropout": dropout_key},
        )
        sums = _metrics(logits, batch)
        return sums["loss"], sums

    grad_sums, sums = _across(axis_name, jax.grad(loss_fn, has_aux=True)(state.params))
    grads = jax.tree.map(lambda g: g / jnp.maximum(sums["count"], 1.0), grad_sums)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), sums


def eval_step(
    params, batch: data_lib.Batch, *, model: SentimentClassifier, axis_name: str | None = None
):
    """Loss and accuracy sums of one batch (summed over `axis_name` under `shard_map`)."""
    logits = model.apply({"params": params}, batch.tokens, batch.lengths)
    return _across(axis_name, _metrics(logits, batch))


def _add(total, sums):
    return sums if total is None else jax.tree.map(jnp.add, total, sums)


def _summarise(sums) -> dict[str, float]:
    sums = jax.device_get(sums)
    count = max(float(sums["count"]), 1.0)
    return {"loss": float(sums["loss"]) / count, "accuracy": float(sums["correct"]) / count}


# ----------------------------------------------------------------------------------
# Data of a run.
# ----------------------------------------------------------------------------------
class Encoded(NamedTuple):
    tokens: list[np.ndarray]
    labels: np.ndarray


class RunData(NamedTuple):
    tokenizer: SubwordTokenizer
    train: Encoded
    val: Encoded
    test: Encoded


def prepare_data(config: TrainConfig, workdir: Path, archive: str | None = None) -> RunData:
    """Load IMDB, hold out the validation slice, learn (or reload) the vocabulary from the
    training texts and encode the three splits.

    Where this process runs glibc malloc with one arena (`lstm_jax.host.one_arena`, as
    `lstm-jax train` does), the tokenizer's threads would queue on it (25 s became 71 s),
    so the work runs in a child process with the default arenas instead."""
    if host.one_arena():
        return _prepare_in_child(config, Path(workdir), archive)
    return _prepare_here(config, Path(workdir), archive)


_CHILD = "import sys; from lstm_jax import training; training._prepare_child(sys.argv[1])"


def _prepare_in_child(config: TrainConfig, workdir: Path, archive: str | None) -> RunData:
    with tempfile.TemporaryDirectory() as tmp:
        exchange = Path(tmp) / "data.pickle"  # the arguments in, the outcome out
        exchange.write_bytes(pickle.dumps((config, workdir, archive)))
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(exchange)], env=host.default_arenas()
        )
        if child.returncode != 0:
            raise RuntimeError(
                f"data preparation failed in its child process (exit code {child.returncode}); "
                "its error is printed above"
            )
        failed, value = pickle.loads(exchange.read_bytes())
    if failed:
        raise value
    return value


def _prepare_child(exchange: str) -> None:
    """`prepare_data`'s child process: run it here and pickle back the data or the error."""
    path = Path(exchange)
    config, workdir, archive = pickle.loads(path.read_bytes())
    try:
        outcome = pickle.dumps((False, _prepare_here(config, workdir, archive)))
    except Exception as error:  # the parent raises it as if prepared there
        try:
            outcome = pickle.dumps((True, error))
        except Exception:  # an error that does not pickle: its type and message
            outcome = pickle.dumps((True, RuntimeError(f"{type(error).__name__}: {error}")))
    path.write_bytes(outcome)


def _prepare_here(config: TrainConfig, workdir: Path, archive: str | None) -> RunData:
    splits = data_lib.load_imdb(archive)
    train, val = data_lib.split_validation(splits["train"], config.val_fraction, config.seed)
    if config.max_train_examples is not None:  # a seeded sample: the split is sorted by label
        order = np.random.default_rng(config.seed).permutation(len(train))
        train = train.take(np.sort(order[: config.max_train_examples]))
    tokenizer = SubwordTokenizer.load_or_train(
        Path(workdir) / TOKENIZER_FILE,
        train.texts,
        config.vocab_size,
        normalize=config.normalize_text,
    )
    return RunData(tokenizer, *(encode_split(tokenizer, s) for s in (train, val, splits["test"])))


def encode_split(tokenizer: SubwordTokenizer, split: data_lib.Split) -> Encoded:
    return Encoded(tokenizer.encode_batch(split.texts), np.asarray(split.labels, np.int32))


def epoch_batches(config: TrainConfig, encoded: Encoded, epoch: int, *, shuffle: bool):
    return list(
        data_lib.batches(
            encoded.tokens,
            encoded.labels,
            batch_size=config.batch_size,
            shuffle=shuffle,
            seed=config.seed,
            epoch=epoch,
            max_len=config.max_len,
        )
    )


# ----------------------------------------------------------------------------------
# The driver.
# ----------------------------------------------------------------------------------
def data_mesh(batch_size: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh (axis `DATA_AXIS`) over the most of `devices` (default: all local ones)
    that split `batch_size` rows evenly."""
    devices = list(jax.local_devices() if devices is None else devices)
    size = max(n for n in range(1, len(devices) + 1) if batch_size % n == 0)
    return Mesh(np.array(devices[:size]), (DATA_AXIS,))


def compiler_options(devices: Iterable[jax.Device]) -> dict[str, Any] | None:
    """XLA options for the jitted steps on `devices`: on CPU, LLVM's `-O1` instead of `-O2`
    for XLA's own kernels (`xla_backend_optimization_level=1`); None elsewhere.

    The steps' matmuls are library calls either way, and the loops' small fusions ran no
    slower at `-O1` (paired probes of the BiLSTM layer's gradient on one core, four runs:
    medians 0.3-3.7% lower), while the stacked model's bfloat16 train step compiled in
    2.18-2.52 s against 2.43-2.69 s (three interleaved rounds of processes at T = 256 and
    1024). The README's Speed section has the train steps' timings.
    """
    cpu = all(device.platform == "cpu" for device in devices)
    return {"xla_backend_optimization_level": 1} if cpu else None


class Trainer:
    """Holds the model, the optimizer and the jitted steps of one config.

    The steps run data-parallel over `mesh` (see `data_mesh`) when it has several devices;
    on one device they are the plain jitted `train_step` and `eval_step`. `place` puts a
    state (or parameters) where the steps expect it; batches may come as NumPy arrays.
    """

    def __init__(
        self,
        config: TrainConfig,
        steps_per_epoch: int = 1,
        devices: Sequence[jax.Device] | None = None,
    ):
        self.config = config
        self.model = make_model(config)
        self.optimizer = make_optimizer(config, steps_per_epoch)
        self.mesh = data_mesh(config.batch_size, devices)
        self.replicated = NamedSharding(self.mesh, P())
        self.split = NamedSharding(self.mesh, P(DATA_AXIS))
        self.parallel = self.mesh.size > 1
        axis = DATA_AXIS if self.parallel else None
        self.step_fn = self._on_mesh(
            functools.partial(
                train_step,
                model=self.model,
                optimizer=self.optimizer,
                seed=config.seed,
                axis_name=axis,
            )
        )
        self.compiler_options = compiler_options(self.mesh.devices.flat)
        self.jitted_train_step = jax.jit(
            self.step_fn,
            in_shardings=(self.replicated, self.split),
            donate_argnums=0,
            compiler_options=self.compiler_options,
        )
        self.jitted_eval_step = jax.jit(
            self._on_mesh(functools.partial(eval_step, model=self.model, axis_name=axis)),
            in_shardings=(self.replicated, self.split),
            compiler_options=self.compiler_options,
        )

    def train_step(self, state: TrainState, batch: data_lib.Batch):
        """One jitted step; on several devices it returns once the step has finished."""
        return self._settled(self.jitted_train_step(state, batch))

    def eval_step(self, params, batch: data_lib.Batch):
        return self._settled(self.jitted_eval_step(params, batch))

    def _settled(self, out):
        """Wait for a multi-device step before the next is dispatched.

        The step's gradient sum is a blocking rendezvous on XLA's CPU thread pool, which
        has one thread per core. With steps queued asynchronously, one device can run ahead
        and hold a pool thread at its rendezvous while the other device's work waits for a
        thread: the process then stalls until XLA aborts it (this happened on the IMDB
        epoch with 2 devices on 2 cores). One step in flight costs the host's overlap of a
        few milliseconds per step.
        """
        return jax.block_until_ready(out) if self.parallel else out

    def _on_mesh(self, step: Callable) -> Callable:
        """`step(replicated, batch)` under `shard_map` when the mesh has several devices."""
        if not self.parallel:
            return step
        return jax.shard_map(
            step,
            mesh=self.mesh,
            in_specs=(P(), P(DATA_AXIS)),
            out_specs=P(),
            check_vma=False,  # the recurrences start from carries that are not per-device
        )

    def place(self, tree):
        """`tree` (a state or parameters) copied to every device of the mesh."""
        return jax.device_put(tree, self.replicated)

    def init_state(self) -> TrainState:
        return self.place(init_state(self.config, self.optimizer))

    def evaluate(self, params, batches: Iterable[data_lib.Batch]) -> dict[str, float]:
        params = self.place(params)
        total = None
        for batch in batches:
            total = _add(total, self.eval_step(params, batch))
        return _summarise(total)


def _checkpoint_manager(path: Path, max_to_keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(path.absolute(), options=options)


def _restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None):
    step = manager.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


@contextlib.contextmanager
def _stop_requests():
    """Turn SIGINT and SIGTERM into a flag the loop polls between steps."""
    requested: list[int] = []
    handler = lambda signum, frame: requested.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _check_workdir(workdir: Path, config: TrainConfig, *, resume: bool, overwrite: bool):
    """Refuse to clobber a run; on resume, return the saved config (which must match)."""
    has_run = (workdir / config_lib.CONFIG_FILE).exists()
    if overwrite and has_run:
        for name in ("checkpoints", "best"):
            shutil.rmtree(workdir / name, ignore_errors=True)
        for name in (config_lib.CONFIG_FILE, TOKENIZER_FILE, HISTORY_FILE, RESULTS_FILE):
            (workdir / name).unlink(missing_ok=True)
        (workdir / "history.png").unlink(missing_ok=True)
        return config
    if not has_run:
        if resume:
            raise RunError(f"nothing to resume: {workdir} holds no training run")
        (workdir / TOKENIZER_FILE).unlink(missing_ok=True)  # left by a start that failed
        return config
    saved = config_lib.load(workdir)
    if (workdir / RESULTS_FILE).exists() and not resume:
        raise RunError(
            f"{workdir} holds a finished run; pass --overwrite to replace it "
            "or choose another --workdir"
        )
    if not resume:
        raise RunError(
            f"{workdir} already holds a run; pass --resume to continue it "
            "or --overwrite to start over"
        )
    if saved != config:
        diff = {
            k: (getattr(saved, k), getattr(config, k))
            for k in saved.__dataclass_fields__
            if getattr(saved, k) != getattr(config, k)
        }
        raise RunError(
            f"{workdir} was trained with another config (saved vs asked: {diff}); "
            "resume with the same options or use another --workdir"
        )
    return saved


def fit(
    config: TrainConfig,
    workdir: str | Path,
    *,
    archive: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train `config` into `workdir`, evaluate on the test split, and return the results.

    Checkpoints every epoch and when SIGINT/SIGTERM arrives (then raises `Interrupted`);
    `resume=True` continues from the latest checkpoint to the same final weights as an
    uninterrupted run. `on_step(step)` is called after each train step (for tools/tests).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if resume and (workdir / RESULTS_FILE).exists():
        return json.loads((workdir / RESULTS_FILE).read_text())
    config = _check_workdir(workdir, config, resume=resume, overwrite=overwrite)
    run = prepare_data(config, workdir, archive)
    config.save(workdir)  # only now: a start that fails on its data leaves no run behind
    steps_per_epoch = data_lib.num_batches(
        run.train.tokens, batch_size=config.batch_size, max_len=config.max_len
    )
    trainer = Trainer(config, steps_per_epoch)
    state = trainer.init_state()
    checkpoints = _checkpoint_manager(workdir / "checkpoints", max_to_keep=2)
    best = _checkpoint_manager(workdir / "best", max_to_keep=1)
    history: list[dict[str, Any]] = []
    epoch_sums = None
    if resume and checkpoints.latest_step() is not None:
        saved = _restore(checkpoints, {"state": state, "sums": trainer.place(_zero_sums())})
        state, epoch_sums = saved["state"], saved["sums"]
        history = (
            json.loads((workdir / HISTORY_FILE).read_text())
            if (workdir / HISTORY_FILE).exists()
            else []
        )
    val_batches = epoch_batches(config, run.val, 0, shuffle=False)
    step = int(state.step)
    with _stop_requests() as stop:
        for epoch in range(len(history), config.epochs):
            batches = epoch_batches(config, run.train, epoch, shuffle=True)
            skip = step - epoch * len(batches)
            if skip == 0:
                epoch_sums = None
            started = time.perf_counter()
            bar = tqdm(
                total=len(batches),
                initial=skip,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="batch",
                disable=not progress,
            )
            for i in range(skip, len(batches)):
                state, sums = trainer.train_step(state, batches[i])
                epoch_sums = _add(epoch_sums, sums)
                step += 1
                bar.update()
                if on_step is not None:
                    on_step(step)
                if (i + 1) % LOG_EVERY == 0:
                    elapsed = time.perf_counter() - started
                    _show_progress(bar, epoch_sums, (i + 1 - skip) * config.batch_size / elapsed)
                if stop:
                    checkpoints.save(
                        step, args=ocp.args.StandardSave({"state": state, "sums": epoch_sums})
                    )
                    bar.close()
                    raise Interrupted(step, workdir)
            bar.close()
            seconds = time.perf_counter() - started
            train_metrics = _summarise(epoch_sums)
            val_metrics = trainer.evaluate(state.params, val_batches)
            record = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": train_metrics["loss"],
                "train_accuracy": train_metrics["accuracy"],
                "val_loss": val_metrics["loss"],
                "val_accuracy": val_metrics["accuracy"],
                "seconds": seconds,
                "padding_fraction": data_lib.padding_fraction(batches),
            }
            checkpoints.save(step, args=ocp.args.StandardSave({"state": state, "sums": epoch_sums}))
            if val_metrics["accuracy"] > max((h["val_accuracy"] for h in history), default=-1):
                best.save(step, args=ocp.args.StandardSave(state.params))
            history.append(record)
            (workdir / HISTORY_FILE).write_text(json.dumps(history, indent=2) + "\n")
            plot_history(history, workdir / "history.png")
            if progress:
                print(_format_record(record), flush=True)
    params = _restore(best, state.params)
    test = trainer.evaluate(params, epoch_batches(config, run.test, 0, shuffle=False))
    results = {
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "best_epoch": history[int(np.argmax([h["val_accuracy"] for h in history]))]["epoch"],
        "epochs": len(history),
    }
    (workdir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    return results


def _show_progress(bar: tqdm, sums, reviews_per_s: float) -> None:
    shown = _summarise(sums)
    bar.set_postfix(
        loss=f"{shown['loss']:.4f}",
        acc=f"{shown['accuracy']:.4f}",
        reviews_per_s=f"{reviews_per_s:.0f}",
    )


def _zero_sums():
    return {k: jnp.zeros((), jnp.float32) for k in ("loss", "correct", "count")}


def _format_record(r: dict[str, Any]) -> str:
    return (
        f"epoch {r['epoch']}: train loss {r['train_loss']:.4f} acc {r['train_accuracy']:.4f}"
        f" | val loss {r['val_loss']:.4f} acc {r['val_accuracy']:.4f}"
        f" | {r['seconds']:.1f} s, padding {100 * r['padding_fraction']:.1f}%"
    )


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation, as a PNG (no pyplot state)."""
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h[f"train_{metric}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


# ----------------------------------------------------------------------------------
# Using a trained run.
# ----------------------------------------------------------------------------------
def load_params(workdir: str | Path, config: TrainConfig | None = None):
    """The best parameters saved in `workdir` (the latest checkpoint's if none is best)."""
    workdir = Path(workdir)
    config = config or config_lib.load(workdir)
    state = init_state(config, make_optimizer(config))
    if (workdir / "best").is_dir():
        best = _checkpoint_manager(workdir / "best", 1)
        if best.latest_step() is not None:
            return _restore(best, state.params)
    manager = _checkpoint_manager(workdir / "checkpoints", 2)
    if manager.latest_step() is None:
        raise RunError(
            f"{workdir} holds no checkpoint yet; train with `lstm-jax train --workdir {workdir}`"
        )
    return _restore(manager, {"state": state, "sums": _zero_sums()})["state"].params


def evaluate(workdir: str | Path, *, archive: str | None = None) -> dict[str, float]:
    """Test loss and accuracy of the run in `workdir`."""
    workdir = Path(workdir)
    config = config_lib.load(workdir)
    params = load_params(workdir, config)
    tokenizer = load_tokenizer(workdir, config)
    test = encode_split(tokenizer, data_lib.load_imdb(archive)["test"])
    return Trainer(config).evaluate(params, epoch_batches(config, test, 0, shuffle=False))


def load_tokenizer(workdir: Path, config: TrainConfig) -> SubwordTokenizer:
    path = Path(workdir) / TOKENIZER_FILE
    if not path.is_file():
        raise RunError(f"{path} not found: {workdir} is not a finished training directory")
    tokenizer = SubwordTokenizer.load(path)
    if tokenizer.vocab_size != config.vocab_size:
        raise RunError(
            f"{path} has {tokenizer.vocab_size} subwords but the run's config says "
            f"{config.vocab_size}: the directory mixes two runs; train it again with --overwrite"
        )
    return tokenizer
