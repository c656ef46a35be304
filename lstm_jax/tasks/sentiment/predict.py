"""Predictions of a trained sentiment run for raw review texts."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.tasks.sentiment.task import SentimentConfig, SentimentTask
from lstm_jax.train import load_params
from lstm_jax.train.config import read_config_json

THRESHOLD = 0.5


class Prediction(NamedTuple):
    text: str
    probability: float
    tokens: int

    @property
    def label(self) -> str:
        return "positive" if self.probability >= THRESHOLD else "negative"


class Predictor:
    """The best model of a sentiment run directory, ready to score review texts."""

    def __init__(self, workdir: str | Path):
        self.workdir = Path(workdir)
        source = f"{self.workdir / 'config.json'}"
        self.config = SentimentConfig.from_dict(read_config_json(self.workdir), source=source)
        task = SentimentTask(self.config)
        task.prepare(self.workdir, ())
        self.tokenizer = task.tokenizer
        self.params = load_params(task, self.workdir)
        model = task.model
        self._logits = jax.jit(lambda p, t, n: model.apply({"params": p}, t, n))

    def encode(self, text: str) -> np.ndarray:
        """Subword ids of `text`; a clear error for what cannot be a review."""
        if not isinstance(text, str):
            raise TypeError(f"a review must be str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("the review text is empty; give at least one word")
        ids = self.tokenizer.encode(_valid_unicode(text))
        return ids if self.config.max_len is None else ids[: self.config.max_len]

    def predict(self, text: str, *, width: int | None = None) -> Prediction:
        """P(positive) of `text`, padded to `width` tokens (default: the next power of two).

        Padding is masked, so any `width` gives the same probability: the lecture's
        experiment, where an unmasked model changed its answer when padding was added.
        """
        ids = self.encode(text)
        width = _padded_width(len(ids)) if width is None else width
        if width < len(ids):
            raise ValueError(f"width {width} is shorter than the review's {len(ids)} subwords")
        tokens = np.zeros((1, width), np.int32)
        tokens[0, : len(ids)] = ids
        logit = self._logits(self.params, tokens, jnp.array([len(ids)], jnp.int32))
        return Prediction(text, float(jax.nn.sigmoid(logit[0])), len(ids))


def _valid_unicode(text: str) -> str:
    """Undecodable bytes (as the command line passes them, surrogate-escaped) become U+FFFD,
    as `lstm_jax.tasks.sentiment.data` does for review files."""
    try:
        raw = text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        raw = text.encode("utf-8", errors="replace")
    return raw.decode("utf-8", errors="replace")


def _padded_width(n: int) -> int:
    """Round up to a power of two (>= 16) so texts of any length share few compiled shapes."""
    return max(16, 1 << (max(n, 1) - 1).bit_length())
