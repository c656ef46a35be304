"""A tiny task for the trainer's tests: is the sum of a padded sequence of numbers positive?

It is defined here, outside `lstm_jax`, as any user's task would be: a config that subclasses
`TrainConfig` and a class with what the `Task` protocol asks for, on the library's layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax.models import Bidirectional
from lstm_jax.train import Task, TrainConfig
from lstm_jax.train.config import option
from lstm_jax.train.task import SPLITS

TIME = 6
SIZES = {"train": 48, "val": 16, "test": 16}


@dataclasses.dataclass(frozen=True)
class ToyConfig(TrainConfig):
    task: ClassVar[str] = "toy"
    hidden: int = option(4, "LSTM units", low=1)
    batch_size: int = option(8, "examples per batch", low=1)
    epochs: int = option(2, "passes", low=1)


class ToyBatch(NamedTuple):
    xs: np.ndarray  # <float32>[batch, time, 1]
    lengths: np.ndarray  # <int32>[batch]
    labels: np.ndarray  # <int32>[batch]
    weights: np.ndarray  # <float32>[batch]


class ToyModel(nn.Module):
    hidden: int
    engine: str = "fused"

    @nn.compact
    def __call__(self, xs, lengths):
        h = Bidirectional(self.hidden, engine=self.engine)(xs, lengths)
        return nn.Dense(1)(h)[:, 0]


class ToyTask(Task):
    artefacts: ClassVar[tuple[str, ...]] = ("toy_scale.txt",)
    selection: ClassVar[tuple[str, str]] = ("accuracy", "max")

    def __init__(self, config: ToyConfig, *, data: Any = None):
        self.config = config
        self.model = ToyModel(config.hidden, config.engine)
        self.splits: dict[str, ToyBatch] = {}
        self.prepared: list[tuple[str, ...]] = []

    def prepare(self, workdir: Path, splits: Sequence[str] = SPLITS) -> None:
        self.prepared.append(tuple(splits))
        path = Path(workdir) / self.artefacts[0]
        if "train" in splits and not path.exists():
            path.write_text("1.0\n")  # an artefact learnt from the training data
        elif not path.exists():
            raise FileNotFoundError(path)
        rng = np.random.default_rng(1000)
        for name in SPLITS:
            n = SIZES[name]
            xs = rng.standard_normal((n, TIME, 1)).astype(np.float32)
            lengths = rng.integers(1, TIME + 1, n).astype(np.int32)
            real = np.arange(TIME)[None, :, None] < lengths[:, None, None]
            labels = (np.sum(np.where(real, xs, 0.0), axis=(1, 2)) > 0).astype(np.int32)
            if name in splits:
                self.splits[name] = ToyBatch(xs, lengths, labels, np.ones(n, np.float32))

    def init_params(self, key: jax.Array) -> Any:
        return self.model.init(key, jnp.zeros((1, TIME, 1)), jnp.ones((1,), jnp.int32))["params"]

    def metrics(self, params, batch, *, train, rng):
        logits = self.model.apply({"params": params}, batch.xs, batch.lengths)
        losses = optax.sigmoid_binary_cross_entropy(logits, batch.labels.astype(jnp.float32))
        correct = ((logits > 0) == (batch.labels == 1)).astype(jnp.float32)
        return {
            "loss": jnp.sum(losses * batch.weights),
            "accuracy": jnp.sum(correct * batch.weights),
            "count": jnp.sum(batch.weights),
        }

    def batches(self, split: str, epoch: int = 0) -> list[ToyBatch]:
        data = self.splits[split]
        n, size = len(data.lengths), self.config.batch_size
        order = np.arange(n)
        if split == "train":
            order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        out = []
        for start in range(0, n, size):
            rows = order[start : start + size]
            pad = size - rows.size  # filler rows weigh 0
            out.append(
                ToyBatch(
                    *(np.concatenate([a[rows], np.zeros((pad, *a.shape[1:]), a.dtype)])
                      for a in data[:3]),
                    np.concatenate([np.ones(rows.size, np.float32), np.zeros(pad, np.float32)]),
                )
            )  # fmt: skip
        return out
