"""Character-level language modelling as a task on the shared trainer.

The text's first `1 - val_fraction` (90%) trains and the rest validates, as char-rnn and
nanoGPT split Tiny Shakespeare. There is no third part: the trainer's final "test"
evaluation reads the validation part with the best epoch's parameters.

Batching scheme: **random windows**. Each epoch draws `len(train) // window` windows of
`window + 1` characters at random offsets (from `(seed, epoch)`), and every window starts
from a zero state. Truncated BPTT with the state carried across consecutive windows
(stateful training) sees longer context, but ties each batch row to one stream, makes
the batches of a step depend on the previous step, and needs a starting carry, which the
fused engine does not take; random windows keep every step independent, data-parallel
and on the fastest engine, and generation also starts from a zero state. Validation reads
the part's consecutive windows, each from a zero state; at the end of a run the part is
also read as 64 streams with the state carried over (`stream_loss`, char-rnn's reading).

The loss is the per-position cross-entropy summed over positions (nats; `count` the
positions), so the reported loss is nats per character; `report` adds bits per character.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax.models import CharLM
from lstm_jax.tasks.charlm.text import Vocabulary, read_text
from lstm_jax.tasks.errors import DataError
from lstm_jax.train import Task, TrainConfig
from lstm_jax.train.config import option, rate
from lstm_jax.train.task import SPLITS

CURVE_FILE = "val_loss_time.png"
SAMPLE_FILE = "sample.txt"
SAMPLE_PROMPT = "ROMEO:"
SAMPLE_LENGTH = 300
STREAMS = 64  # pieces of the validation part read at once by `stream_loss`


@dataclasses.dataclass(frozen=True)
class CharLMConfig(TrainConfig):
    """A language-model run: the trainer's fields (`TrainConfig`) and these."""

    task: ClassVar[str] = "charlm"

    text: str = option("", "the UTF-8 text file to learn from")
    window: int = option(128, "characters per training window (BPTT length)", low=1)
    val_fraction: float = option(
        0.1, "the text's last part, for validation", low=0, high=1, open_low=True, open_high=True
    )
    cell: str = option(
        "lstm", "the recurrent cell", choices=("lstm", "gru", "simple_rnn", "carry_lstm")
    )
    hidden: int = option(512, "units per recurrent layer", low=1)
    layers: int = option(2, "stacked recurrent layers", low=1)
    embed_dim: int = option(64, "character embedding width", low=1)
    dropout: float = rate("dropout after each recurrent layer")
    weight_drop: float = rate("DropConnect on the recurrent kernels (a mask per step and device)")


class Windows(NamedTuple):
    """One batch: `ids <int32>[batch, window + 1]` (inputs are `ids[:, :-1]`, targets
    `ids[:, 1:]`) and `weights <float32>[batch]` (0 for rows that only fill it up)."""

    ids: np.ndarray
    weights: np.ndarray


class CharLMTask(Task):
    """Predict each next character of a text (see the module docstring).

    `data`: the text file to read instead of `config.text`.
    """

    artefacts: ClassVar[tuple[str, ...]] = (Vocabulary.FILE,)
    selection: ClassVar[tuple[str, str]] = ("loss", "min")

    def __init__(self, config: CharLMConfig, *, data: str | Path | None = None):
        self.config = config
        self.path = str(data) if data is not None else config.text
        self.vocab: Vocabulary | None = None
        self.parts: dict[str, np.ndarray] = {}

    @property
    def model(self) -> CharLM:
        if self.vocab is None:
            raise RuntimeError("prepare() the task first: the model's size is the vocabulary's")
        c = self.config
        return CharLM(
            len(self.vocab),
            c.hidden,
            c.layers,
            c.embed_dim,
            c.cell,
            c.dropout,
            c.engine,
            c.matmul_dtype,
            c.weight_drop,
        )

    @property
    def carried_model(self) -> CharLM:
        """`model` on the generic scan in float32, which starts from a given carry (the
        fused engines start from zeros): for sampling and `stream_loss`."""
        return self.model.clone(engine="scan", matmul_dtype=None)

    # ------------------------------------------------------------------------------
    # Data.
    # ------------------------------------------------------------------------------
    def prepare(self, workdir: Path, splits: Sequence[str] = SPLITS) -> None:
        """Read and encode the text (not at all for `splits=()`, e.g. to generate); learn
        the vocabulary with "train" (saved as `vocab.json`), or read the run's."""
        path = Path(workdir) / Vocabulary.FILE
        if not splits:
            self.vocab = Vocabulary.load(path)
            return
        if not self.path:
            raise DataError("no text to learn from: give a UTF-8 file with --text PATH")
        text = read_text(self.path)
        if "train" in splits and not path.exists():
            self.vocab = Vocabulary.of(text)
            self.vocab.save(path)
        else:
            self.vocab = Vocabulary.load(path)
        ids = self.vocab.encode(text, where=self.path)
        cut = int(len(ids) * (1 - self.config.val_fraction))  # as nanoGPT cuts it
        need = self.config.window + 1
        for name, part in (("train", ids[:cut]), ("val", ids[cut:])):
            if len(part) < need:
                raise DataError(
                    f"{self.path}: its {name} part has {len(part)} characters "
                    f"({len(ids)} in all, val_fraction {self.config.val_fraction}), fewer "
                    f"than one window of {need} (window + 1); use a longer text or a "
                    "shorter --window"
                )
            self.parts[name] = part
        self.parts["test"] = self.parts["val"]

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.parts.items() if k != "test")
        return (
            f"{len(self.vocab)} symbols; characters: {sizes} (the test evaluation reads "
            f"the validation part); {self.num_batches('train')} batches of "
            f"{self.config.batch_size} random windows of {self.config.window} per epoch"
        )

    def _starts(self, split: str, epoch: int) -> np.ndarray:
        part, window = self.parts[split], self.config.window
        if split == "train":
            count = self.num_batches("train") * self.config.batch_size
            rng = np.random.default_rng([self.config.seed, epoch])
            return rng.integers(0, len(part) - window, count)
        return np.arange(0, len(part) - window, window)

    def batches(self, split: str, epoch: int = 0) -> list[Windows]:
        """Fixed-shape batches: random windows of the training part (by `(seed, epoch)`),
        or every consecutive window of the validation part."""
        if split not in self.parts:
            raise ValueError(f"split {split!r} is not prepared; call prepare() with it first")
        part, size = self.parts[split], self.config.batch_size
        starts = self._starts(split, epoch)
        offsets = np.arange(self.config.window + 1)
        out = []
        for i in range(0, len(starts), size):
            rows = starts[i : i + size]
            pad = size - len(rows)
            ids = part[np.pad(rows, (0, pad))[:, None] + offsets[None, :]]
            weights = np.concatenate([np.ones(len(rows)), np.zeros(pad)]).astype(np.float32)
            out.append(Windows(ids, weights))
        return out

    def num_batches(self, split: str) -> int:
        size = self.config.batch_size
        if split == "train":  # about one pass over the part's characters
            return max(1, (len(self.parts["train"]) // self.config.window) // size)
        return -(-len(self._starts(split, 0)) // size)

    # ------------------------------------------------------------------------------
    # Model and metrics.
    # ------------------------------------------------------------------------------
    def init_params(self, key: jax.Array) -> Any:
        ids = jnp.zeros((1, self.config.window), jnp.int32)
        return self.model.init(key, ids)["params"]

    def metrics(
        self, params: Any, batch: Windows, *, train: bool, rng: jax.Array | None
    ) -> dict[str, jax.Array]:
        """Cross-entropy (nats) summed over the real rows' positions, `count` the positions."""
        rngs = {"dropout": rng} if train else {}
        ids = jnp.asarray(batch.ids)
        logits, _ = self.model.apply({"params": params}, ids[:, :-1], train=train, rngs=rngs)
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), ids[:, 1:]
        )
        w = batch.weights[:, None]
        correct = (jnp.argmax(logits, -1) == ids[:, 1:]).astype(jnp.float32)
        return {
            "loss": jnp.sum(w * losses),
            "accuracy": jnp.sum(w * correct),
            "count": jnp.sum(batch.weights) * losses.shape[1],
        }

    def report(self, means: dict[str, float]) -> dict[str, float]:
        return {**means, "bpc": means["loss"] / math.log(2)}

    def stream_loss(self, params: Any, streams: int = STREAMS) -> float:
        """Nats per character of the validation part cut into `streams` consecutive
        pieces (fewer where a piece would be shorter than a window), each read window by
        window with the state carried over (char-rnn's validation), so every character
        but a piece's first sees its whole past; the trainer's windows each start from a
        zero state. Float32 matmuls on the generic scan: the fused engines start from zeros."""
        model = self.carried_model
        part, window = self.parts["val"], self.config.window
        streams = self.stream_count(streams)
        length = (len(part) - 1) // streams
        ids = part[np.arange(streams)[:, None] * length + np.arange(length + 1)[None, :]]
        carries, total = model.zero_carries(streams), 0.0
        for start in range(0, length, window):
            piece = jnp.asarray(ids[:, start : start + window + 1])
            loss, carries = _stream_piece(model, params, carries, piece)
            total += float(loss)
        return total / (streams * length)

    def stream_count(self, streams: int = STREAMS) -> int:
        """How many of `streams` pieces `stream_loss` reads: at most one per window."""
        return max(1, min(streams, (len(self.parts["val"]) - 1) // self.config.window))

    def tables(self, params: Any) -> str:
        """`stream_loss` for `lstm-jax evaluate`, beside the windows' test metrics."""
        loss = self.stream_loss(params)
        return (
            f"| validation read as {self.stream_count()} streams | nats/char | bits/char |\n"
            "|---|---:|---:|\n"
            f"| state carried from window to window | {loss:.4f} | {loss / math.log(2):.4f} |"
        )

    # ------------------------------------------------------------------------------
    # At the end of a run.
    # ------------------------------------------------------------------------------
    def finish(self, workdir: Path, params: Any) -> dict[str, Any]:
        """Plot validation loss against training time (`val_loss_time.png`), save a
        sample from "ROMEO:" at temperature 0.8 (`sample.txt`) and report the validation
        part's loss read as streams (`stream_loss`)."""
        from lstm_jax.tasks.charlm.generate import Sampler

        plot_curve(json.loads((Path(workdir) / "history.json").read_text()), workdir / CURVE_FILE)
        sampler = Sampler(self, params)
        prompt = SAMPLE_PROMPT if all(s in self.vocab.ids for s in SAMPLE_PROMPT) else ""
        prompt = prompt or self.vocab.symbols[0]
        sample = prompt + sampler.generate(prompt, SAMPLE_LENGTH, temperature=0.8, seed=0)[0]
        (Path(workdir) / SAMPLE_FILE).write_text(sample + "\n")
        loss = self.stream_loss(params)
        return {"val_stream_loss": loss, "val_stream_bpc": loss / math.log(2)}


@functools.partial(jax.jit, static_argnames=("model",))
def _stream_piece(model: CharLM, params: Any, carries: tuple, ids_BW: jax.Array) -> tuple:
    """The summed loss of one window of every stream, and the carries after it."""
    logits, carries = model.apply({"params": params}, ids_BW[:, :-1], carries=carries)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, ids_BW[:, 1:])
    return losses.sum(), carries


def plot_curve(records: list[dict[str, Any]], path: Path) -> None:
    """Loss (nats/char) after each epoch against the training time so far (no pyplot state)."""
    from matplotlib.figure import Figure

    minutes = np.cumsum([r["seconds"] for r in records]) / 60
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.plot(minutes, [r["val_loss"] for r in records], "o-", label="validation")
    ax.plot(minutes, [r["train_loss"] for r in records], "s--", alpha=0.6, label="training")
    ax.set(xlabel="training time (minutes)", ylabel="loss (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
