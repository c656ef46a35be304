"""IMDB sentiment as a task on the shared trainer: its config, data, tokenizer and loss.

The run directory gets `tokenizer.json` (the subword vocabulary learnt from the training
texts) beside the trainer's files. The validation split is a seeded, stratified slice of
IMDB's training split; the test split is read once, at the end of a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax import host, recurrence
from lstm_jax.models import HEADS, KINDS, SentimentClassifier
from lstm_jax.tasks.errors import ChildTraceback, written_for_users
from lstm_jax.tasks.sentiment import data as data_lib
from lstm_jax.tasks.sentiment.tokenizer import SubwordTokenizer
from lstm_jax.train import Task, TrainConfig
from lstm_jax.train.config import ConfigError, option, rate
from lstm_jax.train.rundir import RunError
from lstm_jax.train.task import SPLITS

TOKENIZER_FILE = "tokenizer.json"


@dataclasses.dataclass(frozen=True)
class SentimentConfig(TrainConfig):
    """A sentiment run: the trainer's fields (`TrainConfig`) and these."""

    task: ClassVar[str] = "sentiment"

    model: str = option("bilstm", "the tutorial's classifier", choices=tuple(KINDS))
    head: str = option(
        "last", "what the dense layers read: final states (the tutorial) or max and mean "
        "over time", choices=HEADS,
    )  # fmt: skip
    vocab_size: int = option(8185, "subword ids, padding included (the tutorial's 8185)", low=257)
    normalize_text: bool = option(
        False, "learn and read the vocabulary on lower-cased text, <br /> as spaces"
    )
    dropout: float = rate("word and output dropout rate")
    layer_dropout: float = rate(
        "dropout between the stacked model's recurrent layers (the same features every step)"
    )
    embed_dropout: float = rate(
        "dropout of embedding features (the same features every step of a review)"
    )
    weight_drop: float = rate("DropConnect on the recurrent kernels (a mask per step and device)")
    label_smoothing: float = rate(
        "train towards s/2 and 1 - s/2 instead of 0 and 1 (reported losses stay plain)"
    )
    target_replication: float = rate(
        "weight of the loss at every replicate_every-th step's outputs, read by the same head "
        "and trained towards the review's label (the final states' loss keeps 1 - weight)"
    )
    replicate_every: int = option(8, "the step stride of target_replication", low=1)
    val_fraction: float = option(
        0.1, "share of the training split held out for validation",
        low=0.0, high=1.0, open_low=True, open_high=True,
    )  # fmt: skip
    max_len: int | None = option(None, "keep the first N subwords of a review (none: all)", low=1)
    max_train_examples: int | None = option(
        None, "train on a seeded sample of N reviews (none: all), for quick runs", low=1
    )
    train_max_len: int | None = option(
        None, "train on the first N subwords of a review; validation and test read max_len", low=1
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_replication and self.head == "pool":
            raise ConfigError(
                "target_replication needs head 'last' (the pooled head reads every step "
                "already); set target_replication to 0 with head 'pool'"
            )
        if self.layer_dropout and len(KINDS[self.model]) < 2:
            raise ConfigError(
                f"layer_dropout needs the stacked model: {self.model!r} has one recurrent layer"
            )


@dataclasses.dataclass
class Encoded:
    """A split as subword ids: `tokens` (one `<int32>[length]` per review) and labels."""

    tokens: list[np.ndarray]
    labels: np.ndarray


class SentimentTask(Task):
    """Binary sentiment of IMDB reviews with `SentimentClassifier`.

    `data`: the IMDB reviews (`data.load_imdb`: a `.tar.gz` or folder in the aclImdb
    layout; None: `$LSTM_JAX_IMDB_ARCHIVE`, else TensorFlow Datasets).
    """

    artefacts: ClassVar[tuple[str, ...]] = (TOKENIZER_FILE,)
    selection: ClassVar[tuple[str, str]] = ("accuracy", "max")

    def __init__(self, config: SentimentConfig, *, data: str | Path | None = None):
        self.config = config
        self.data = data
        self.model = SentimentClassifier(
            config.vocab_size,
            config.model,
            dropout_rate=config.dropout,
            layer_dropout_rate=config.layer_dropout,
            embed_dropout_rate=config.embed_dropout,
            weight_drop=config.weight_drop,
            head=config.head,
            replicate_every=config.replicate_every if config.target_replication else 0,
            engine=config.engine,
            matmul_dtype=config.matmul_dtype,
        )
        self.tokenizer: SubwordTokenizer | None = None
        self.splits: dict[str, Encoded] = {}

    def prepare(self, workdir: Path, splits: Sequence[str] = SPLITS) -> None:
        """Load IMDB, hold out the validation slice, learn (or reload) the vocabulary from
        the training texts and encode `splits`; without "train", the run's saved
        vocabulary is read (a clear error if `workdir` has none).

        In a process on one malloc arena (`host.one_malloc_arena()`, as `lstm-jax` runs)
        this work runs in a child Python process on glibc's own arenas, where the
        tokenizer's threads do not queue on the one arena's lock.
        """
        saved = None if "train" in splits else load_tokenizer(workdir, self.config)
        if not splits:  # the vocabulary alone, for predictions
            self.tokenizer, self.splits = saved, {}
            return
        run = _in_child if host.one_malloc_arena() else _encode_splits
        path = Path(workdir) / TOKENIZER_FILE
        self.tokenizer, self.splits = run(self.config, self.data, path, tuple(splits), saved)

    def init_params(self, key: jax.Array) -> Any:
        tokens = jnp.zeros((1, 1), jnp.int32)
        return self.model.init(key, tokens, jnp.ones((1,), jnp.int32))["params"]

    def metrics(
        self, params: Any, batch: data_lib.Batch, *, train: bool, rng: jax.Array | None
    ) -> dict[str, jax.Array]:
        """Sigmoid cross-entropy (towards smoothed labels in training, with
        `label_smoothing`; with `target_replication` w, (1 - w) times the final states'
        plus w times the mean over the review's real replicated steps) and correct answers,
        summed over the real reviews."""
        rngs = {"dropout": rng} if train else {}
        replicate = train and self.config.target_replication > 0
        inputs = ({"params": params}, batch.tokens, batch.lengths)
        if replicate:  # the per-step logits come back as what the model sowed
            logits_B, sown = self.model.apply(
                *inputs, train=train, rngs=rngs, mutable=["intermediates"]
            )
        else:
            logits_B = self.model.apply(*inputs, train=train, rngs=rngs)
        labels = batch.labels.astype(jnp.float32)
        if train and self.config.label_smoothing:
            labels = labels * (1.0 - self.config.label_smoothing) + self.config.label_smoothing / 2
        losses = optax.sigmoid_binary_cross_entropy(logits_B, labels)
        if replicate:
            (steps_BS,) = sown["intermediates"]["step_logits"]
            real_TB = recurrence.step_mask(batch.lengths, batch.tokens.shape[1])
            real_BS = real_TB[:: self.config.replicate_every].T.astype(jnp.float32)
            step_losses = optax.sigmoid_binary_cross_entropy(steps_BS, labels[:, None])
            per_review = (step_losses * real_BS).sum(1) / jnp.maximum(real_BS.sum(1), 1.0)
            weight = self.config.target_replication
            losses = (1.0 - weight) * losses + weight * per_review
        correct = ((logits_B > 0) == (batch.labels == 1)).astype(jnp.float32)
        return {
            "loss": jnp.sum(losses * batch.weights),
            "accuracy": jnp.sum(correct * batch.weights),
            "count": jnp.sum(batch.weights),
        }

    def batches(self, split: str, epoch: int = 0) -> list[data_lib.Batch]:
        """Bucketed batches of `split`; shuffled by `(seed, epoch)` for "train" only."""
        if split not in self.splits:
            raise ValueError(f"split {split!r} is not prepared; call prepare() with it first")
        encoded = self.splits[split]
        return list(
            data_lib.batches(
                encoded.tokens,
                encoded.labels,
                batch_size=self.config.batch_size,
                shuffle=split == "train",
                seed=self.config.seed,
                epoch=epoch,
                max_len=self._max_len(split),
            )
        )

    def num_batches(self, split: str) -> int:
        return data_lib.num_batches(
            self.splits[split].tokens,
            batch_size=self.config.batch_size,
            max_len=self._max_len(split),
        )

    def _max_len(self, split: str) -> int | None:
        """Where `split`'s reviews are cut: `train_max_len` shortens only the training
        reviews (cheaper epochs), so selection and the test score read whole reviews."""
        cut = self.config.train_max_len if split == "train" else None
        limits = [n for n in (self.config.max_len, cut) if n is not None]
        return min(limits) if limits else None

    def epoch_extras(self, batches: list[data_lib.Batch]) -> dict[str, float]:
        return {"padding_fraction": data_lib.padding_fraction(batches)}


def load_tokenizer(workdir: str | Path, config: SentimentConfig) -> SubwordTokenizer:
    """The vocabulary a run learnt; an error naming the file when it is missing or does
    not match the run's config."""
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


def _texts(
    config: SentimentConfig, data: str | Path | None, splits: Sequence[str]
) -> dict[str, data_lib.Split]:
    imdb = data_lib.load_imdb(data)
    texts = {"test": imdb["test"]}
    if {"train", "val"} & set(splits):
        train, val = data_lib.split_validation(imdb["train"], config.val_fraction, config.seed)
        if config.max_train_examples is not None:  # a seeded sample; the split is sorted
            order = np.random.default_rng(config.seed).permutation(len(train))
            train = train.take(np.sort(order[: config.max_train_examples]))
        texts.update(train=train, val=val)
    return {name: texts[name] for name in splits}


def _encode_splits(
    config: SentimentConfig,
    data: str | Path | None,
    path: Path,
    splits: Sequence[str],
    tokenizer: SubwordTokenizer | None,
) -> tuple[SubwordTokenizer, dict[str, Encoded]]:
    """`splits` encoded with `tokenizer`, the run's saved vocabulary, or when None (with
    "train" among `splits`) with the one at `path`, learnt from the training texts and
    saved there first; returns the vocabulary too."""
    texts = _texts(config, data, splits)
    if tokenizer is None:
        tokenizer = SubwordTokenizer.load_or_train(
            path, texts["train"].texts, config.vocab_size, normalize=config.normalize_text
        )
    return tokenizer, {
        name: Encoded(tokenizer.encode_batch(split.texts), split.labels)
        for name, split in texts.items()
    }


def _in_child(*args: Any) -> tuple[SubwordTokenizer, dict[str, Encoded]]:
    """`_encode_splits(*args)` in a new Python process (with this one's `sys.path`,
    environment, stdout and stderr); its exception is raised here, a failure's (not a
    message for users) with the child's traceback as its cause. A child that ends
    without an answer leaves the work to this process, with a warning.

    The child's stdin stays open while this process waits: when this process ends early
    (killed, or interrupted here), the pipe closes and the child ends too
    (`_exit_with_parent`), instead of tokenizing on for nobody. The answer comes back
    through a pipe of its own, not the disk, so a killed run leaves nothing behind."""
    # sys.path comes first, in a pickle of plain values: the child needs it to import us.
    ended, answer = _ask_child(pickle.dumps((sys.path, pickle.dumps(args))))
    if answer:
        value, error, failure = pickle.loads(answer)
        if failure is not None:
            raise error from ChildTraceback(f"in the child process that tokenizes:\n{failure}")
        if error is not None:
            raise error
        return value
    warnings.warn(
        f"the child process that tokenizes the reviews {ended} without an answer; "
        "tokenizing in this process instead, slower on one malloc arena",
        stacklevel=3,
    )
    return _encode_splits(*args)


def _ask_child(request: bytes) -> tuple[str, bytes]:
    """Start the child, hand it `request` on its stdin and read its answer from a pipe that
    nothing else writes to; returns how the child ended and its answer (empty unless it
    ended well)."""
    read_end, write_end = os.pipe()
    code = (
        "import pickle, sys; path, request = pickle.load(sys.stdin.buffer); "
        f"sys.path[:] = path; from {__name__} import _child_main; "
        f"_child_main(request, {write_end})"
    )
    with open(read_end, "rb") as answers:
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, pass_fds=(write_end,)
            )
        except OSError as error:  # no Python to start
            return f"did not start ({error})", b""
        finally:
            os.close(write_end)  # the child's copy is now the pipe's only writer
        try:
            with contextlib.suppress(BrokenPipeError):  # a child that ended unread
                child.stdin.write(request)
                child.stdin.flush()
            answer = answers.read()
            status = child.wait()
        finally:
            if child.poll() is None:  # interrupted while waiting
                child.kill()
                child.wait()
            with contextlib.suppress(BrokenPipeError):  # what the write left unsent
                child.stdin.close()
    return f"ended (status {status})", answer if status == 0 else b""


def _child_main(request: bytes, answer: int) -> None:
    """The child's side of `_in_child`: `_encode_splits` of the request's arguments, its
    result or its exception (with its traceback, unless written for users) pickled to the
    pipe whose file descriptor is `answer`."""
    _exit_with_parent()
    args = pickle.loads(request)
    try:
        result = (_encode_splits(*args), None, None)
    except Exception as error:  # handed to the parent, which raises it
        failure = None if written_for_users(error) else traceback.format_exc()
        result = (None, error, failure)
    with os.fdopen(answer, "wb") as out:
        out.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


def _exit_with_parent() -> None:
    """End this process as soon as its stdin reaches its end: the parent closed the pipe,
    or was killed (a thread that waits for it). The thread reads the file descriptor, not
    `sys.stdin`, whose lock it would hold while the interpreter shuts down."""
    fd = sys.stdin.fileno()

    def watch() -> None:
        while os.read(fd, 1 << 16):
            pass
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
