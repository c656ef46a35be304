"""Text in, symbol ids out: reading a UTF-8 file with clear errors, and the vocabulary.

The vocabulary is the sorted set of the file's characters (as char-rnn and nanoGPT build
theirs), saved beside a run as `vocab.json`; encoding a character it lacks is an error
that names the character and where it is, never a silent substitute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lstm_jax.tasks.errors import DataError


def read_text(path: str | Path) -> str:
    """The text of the UTF-8 file `path`; a `DataError` for a missing, empty or non-UTF-8
    file (with the byte offset of the first bad byte)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path} not found: give a UTF-8 text file with --text PATH")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not UTF-8 text: byte {error.start} is {raw[error.start]:#04x} "
            f"({error.reason}); convert it, e.g. with iconv -t UTF-8"
        ) from None
    if not text:
        raise DataError(f"{path} is empty: a language model needs text to learn from")
    return text


class Vocabulary:
    """Characters to ids and back: `symbols[i]` is id `i`."""

    FILE = "vocab.json"

    def __init__(self, symbols: str):
        if len(set(symbols)) != len(symbols) or not symbols:
            raise ValueError("a vocabulary needs distinct symbols, at least one")
        self.symbols = symbols
        self.ids = {s: i for i, s in enumerate(symbols)}

    @classmethod
    def of(cls, text: str) -> Vocabulary:
        """The sorted set of `text`'s characters."""
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str, where: str = "the text") -> np.ndarray:
        """`<int32>[len(text)]` ids; a `DataError` names the first character the vocabulary
        lacks, and its position in `where`."""
        try:
            return np.fromiter((self.ids[s] for s in text), np.int32, len(text))
        except KeyError:
            index = next(i for i, s in enumerate(text) if s not in self.ids)
            raise DataError(
                f"{where} has {text[index]!r} at character {index}, which the model's "
                f"{len(self)}-symbol vocabulary lacks; use only these: {self.symbols!r}"
            ) from None

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.symbols[i] for i in np.asarray(ids).ravel())

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"symbols": self.symbols}, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path} not found: the run directory holds no trained language model")
        return cls(json.loads(path.read_text())["symbols"])
