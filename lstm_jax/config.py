"""The training configuration: one frozen dataclass, saved beside every run's checkpoints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from lstm_jax.models import check_kind
from lstm_jax.recurrence import MATMUL_DTYPES

CONFIG_FILE = "config.json"
SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run's result (the data source is not part of it).

    Attributes:
      model: "bilstm" or "stacked" (`lstm_jax.models.KINDS`).
      vocab_size: subword vocabulary size, padding id 0 included (the tutorial's 8185).
      normalize_text: learn and apply the vocabulary on lower-cased text with IMDB's
        `<br />` markup as spaces (`lstm_jax.tokenizer.normalize_text`).
      batch_size: reviews per batch (the lecture's `padded_batch(64)`).
      epochs: passes over the training split.
      learning_rate: Adam's step size (its peak, with a schedule).
      schedule: "constant", or "cosine" (decay to 0 over the run's steps).
      clip_norm: global gradient-norm clip (0 disables it).
      dropout: dropout rate on the embeddings and the recurrent output (0: the tutorial's).
      seed: the root of every random choice: initialisation, validation split, shuffling.
      val_fraction: share of the training split held out for validation.
      max_len: keep only the first `max_len` subwords of each review (None: whole reviews).
      max_train_examples: use only this many training reviews (None: all), for quick runs.
      matmul_dtype: "float32", or "bfloat16" for bfloat16 inputs to the recurrent
        matmuls (float32 accumulation, gates and cell state; the fused engine only).
    """

    model: str = "bilstm"
    vocab_size: int = 8185
    normalize_text: bool = False
    batch_size: int = 64
    epochs: int = 4
    learning_rate: float = 1e-3
    schedule: str = "constant"
    clip_norm: float = 1.0
    dropout: float = 0.0
    seed: int = 0
    val_fraction: float = 0.1
    max_len: int | None = None
    max_train_examples: int | None = None
    matmul_dtype: str = "float32"

    def __post_init__(self):
        check_kind(self.model)
        if self.matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(
                f"matmul_dtype must be one of {MATMUL_DTYPES}, got {self.matmul_dtype!r}"
            )
        for name in ("vocab_size", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.max_len is not None and self.max_len < 1:
            raise ValueError(f"max_len must be positive or None, got {self.max_len}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes`; unknown names raise instead of passing silently."""
        return from_dict({**dataclasses.asdict(self), **changes})

    def save(self, workdir: Path) -> None:
        (Path(workdir) / CONFIG_FILE).write_text(
            json.dumps(dataclasses.asdict(self), indent=2) + "\n"
        )


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """A `TrainConfig` from a dict; a misspelt key is an error, not a silent default."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid keys are {sorted(fields)}")
    return TrainConfig(**values)


def load(workdir: Path) -> TrainConfig:
    """The config saved in `workdir`; a clear error when the directory holds no run."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {workdir} is not a training directory; "
            "train one with `lstm-jax train --workdir DIR`"
        )
    return from_dict(json.loads(path.read_text()))
