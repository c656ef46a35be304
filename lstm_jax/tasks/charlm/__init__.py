"""Character-level language modelling: an LSTM language model on any UTF-8 text, and
sampling from it.

- `text`: reading the file (UTF-8, clear errors) and the vocabulary (`vocab.json`);
- `task`: `CharLMConfig` and `CharLMTask` (random windows, cross-entropy per position);
- `generate`: `Sampler`, the prompt-primed sampler in one jitted scan, and its stream.
"""

from lstm_jax.tasks.charlm.generate import Sampler
from lstm_jax.tasks.charlm.task import CharLMConfig, CharLMTask

__all__ = ["CharLMConfig", "CharLMTask", "Sampler"]
