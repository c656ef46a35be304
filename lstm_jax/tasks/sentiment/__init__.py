"""IMDB movie-review sentiment: the tutorial's two BiLSTM classifiers on the shared trainer.

- `data`: the reviews (archive, folder or TensorFlow Datasets), the validation split and
  length-bucketed batches;
- `tokenizer`: the subword vocabulary learnt from the training texts;
- `task`: `SentimentConfig` and `SentimentTask` (what the trainer asks of a task);
- `predict`: `Predictor`, P(positive) of raw texts from a run directory.
"""

from lstm_jax.tasks.sentiment.predict import Prediction, Predictor
from lstm_jax.tasks.sentiment.task import SentimentConfig, SentimentTask

__all__ = ["Prediction", "Predictor", "SentimentConfig", "SentimentTask"]
