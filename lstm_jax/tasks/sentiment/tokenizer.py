"""A subword tokenizer learned from the training reviews (stands in for TFDS' `subwords8k`).

The tutorial's `imdb_reviews/subwords8k` vocabulary no longer ships with
`tensorflow-datasets`, so we learn one of the same size (8,185 ids) from the *training*
texts with Hugging Face `tokenizers`: byte-level BPE with no normaliser, so any `str`
(non-ASCII, U+FFFD replacement characters, runs of whitespace, upper case) encodes and
decodes back to itself exactly.

Ids: 0 is padding and never comes out of `encode`; the BPE vocabulary occupies
`1 .. vocab_size - 1` (BPE's own ids shifted by one). There is no special token a review
could spell, so a review containing the text "<pad>" is just text.

Training is deterministic: the same texts and size give the same vocabulary in every run.

`normalize=True` learns the vocabulary of normalised text instead (IMDB's `<br />` line
breaks become spaces, everything lower case): fewer ids are spent on case and markup, and
`decode(encode(t))` gives back `normalize_text(t)`, not `t`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD_ID = 0
DEFAULT_VOCAB_SIZE = 8185  # TFDS' imdb_reviews/subwords8k, so parameter counts match.
_FORMAT = "lstm_jax.SubwordTokenizer"
_VERSION = 1
# Byte-level BPE needs the 256 byte symbols, plus our padding id.
_MIN_VOCAB_SIZE = 256 + 1


class SubwordTokenizer:
    """Byte-level BPE over a learned vocabulary; id 0 is reserved for padding.

    Make one with `SubwordTokenizer.train(texts)`, `SubwordTokenizer.load(path)` or
    `SubwordTokenizer.load_or_train(path, texts)`; the constructor wraps a trained
    `tokenizers.Tokenizer` and is not meant to be called directly.
    """

    def __init__(self, hf_tokenizer: Tokenizer, vocab_size: int):
        self._tok = hf_tokenizer
        self._vocab_size = int(vocab_size)

    # ------------------------------------------------------------------------------
    # Building.
    # ------------------------------------------------------------------------------
    @classmethod
    def train(
        cls, texts: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE, *, normalize: bool = False
    ) -> SubwordTokenizer:
        """Learn a vocabulary of `vocab_size` ids (padding included) from `texts`
        (`normalize`: of their normalised form, see the module's docstring).

        Pass the training split only. A corpus too small to support `vocab_size - 1` BPE
        symbols learns fewer (`learned_vocab_size`); `vocab_size` stays as requested, so
        the model's embedding size never depends on the corpus.
        """
        if not isinstance(vocab_size, int) or vocab_size < _MIN_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size must be an int >= {_MIN_VOCAB_SIZE} (256 byte symbols plus "
                f"padding), got {vocab_size!r}"
            )
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            raise ValueError("cannot train a tokenizer on no texts; pass the training reviews")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        tok = _new_byte_level_bpe(normalize)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 1,  # id 0 (padding) lives outside the BPE vocabulary
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
        )
        tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
        return cls(tok, vocab_size)

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        """Read a tokenizer written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}")
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
            if blob.get("format") != _FORMAT or blob.get("version") != _VERSION:
                raise ValueError("unknown format")
            tok = Tokenizer.from_str(json.dumps(blob["tokenizer"]))
            vocab_size = int(blob["vocab_size"])
        except Exception as e:  # bad JSON, missing keys, or a tokenizer tokenizers rejects
            raise ValueError(
                f"{path} is not a tokenizer saved by SubwordTokenizer.save ({e}); delete it "
                "to learn a new one"
            ) from e
        return cls(tok, vocab_size)

    @classmethod
    def load_or_train(
        cls,
        path: str | Path,
        texts: Sequence[str],
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        *,
        normalize: bool = False,
    ) -> SubwordTokenizer:
        """The tokenizer cached at `path` (a JSON file in a run directory), else one learned
        from `texts` and saved there. A cached tokenizer of another kind is an error."""
        path = Path(path)
        if path.exists():
            tokenizer = cls.load(path)
            if tokenizer.normalizes != normalize:
                raise ValueError(
                    f"the tokenizer cached at {path} was learned with normalize="
                    f"{tokenizer.normalizes}, but normalize={normalize} was requested; delete "
                    "the file (or use a new run directory) to learn a new vocabulary"
                )
            if tokenizer.vocab_size != vocab_size:
                raise ValueError(
                    f"the tokenizer cached at {path} was learned with vocab_size "
                    f"{tokenizer.vocab_size}, but {vocab_size} was requested; use "
                    f"vocab_size={tokenizer.vocab_size}, or delete the file (or use a new run "
                    "directory) to learn a new vocabulary"
                )
            return tokenizer
        tokenizer = cls.train(texts, vocab_size, normalize=normalize)
        tokenizer.save(path)
        return tokenizer

    def save(self, path: str | Path) -> None:
        """Write the tokenizer to one JSON file (atomically: a crash leaves no half file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "format": _FORMAT,
            "version": _VERSION,
            "vocab_size": self._vocab_size,
            "learned_vocab_size": self.learned_vocab_size,
            "tokenizer": json.loads(self._tok.to_str()),
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(blob, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    # ------------------------------------------------------------------------------
    # Using.
    # ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Size of the id space, padding included (the embedding's row count): every id
        lies in `[0, vocab_size)`. The `vocab_size` given to `train`."""
        return self._vocab_size

    @property
    def normalizes(self) -> bool:
        """Whether texts are normalised before encoding (`train(..., normalize=True)`)."""
        return self._tok.normalizer is not None

    @property
    def learned_vocab_size(self) -> int:
        """Ids actually in use, padding included: `encode` gives ids below this. Equals
        `vocab_size` unless the training corpus was too small to learn that many."""
        return self._tok.get_vocab_size(with_added_tokens=True) + 1

    def encode(self, text: str) -> np.ndarray:
        """`<int32>[n]` ids of `text`, all in `[1, vocab_size)`; `""` gives an empty array.

        `text` must be `str`: bytes raise `TypeError` (decode them first, e.g. with
        `data.decode("utf-8", errors="replace")` as `lstm_jax.tasks.sentiment.data` does).
        """
        _check_text(text, "text")
        try:
            ids = self._tok.encode(text, add_special_tokens=False).ids
        except TypeError as e:  # a str that is not valid Unicode (a lone surrogate)
            raise ValueError(_not_unicode_message("text")) from e
        return np.asarray(ids, dtype=np.int32) + 1

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """`encode` of every text (in parallel, on all cores)."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a sequence of strings; use encode for one")
        texts = list(texts)
        for i, text in enumerate(texts):
            _check_text(text, f"texts[{i}]")
        try:
            encodings = self._tok.encode_batch_fast(texts, add_special_tokens=False)
        except TypeError as e:  # a str that is not valid Unicode (a lone surrogate)
            bad = next(i for i, t in enumerate(texts) if not _is_unicode(t))
            raise ValueError(_not_unicode_message(f"texts[{bad}]")) from e
        return [np.asarray(e.ids, dtype=np.int32) + 1 for e in encodings]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of `ids`; padding ids (0) are dropped, so a padded row decodes to its
        review. Exact inverse of `encode`: `decode(encode(t)) == t` for every `str` t
        (`normalize_text(t)` for a tokenizer trained with `normalize=True`)."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D sequence of ints, got shape {ids.shape}")
        ids = ids[ids != PAD_ID]
        if ids.size and (ids.min() < 0 or ids.max() >= self.learned_vocab_size):
            raise ValueError(
                f"ids must lie in [0, {self.learned_vocab_size}), got min {ids.min()} and max "
                f"{ids.max()}"
            )
        return self._tok.decode((ids - 1).tolist(), skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"SubwordTokenizer(vocab_size={self.vocab_size})"


def normalize_text(text: str) -> str:
    """What a `normalize=True` tokenizer sees: `<br />` as a space, all lower case."""
    return text.replace("<br />", " ").lower()


def _new_byte_level_bpe(normalize: bool = False) -> Tokenizer:
    """An untrained byte-level BPE; without a normaliser it is lossless on every `str`."""
    tok = Tokenizer(models.BPE())
    if normalize:
        tok.normalizer = normalizers.Sequence(
            [normalizers.Replace("<br />", " "), normalizers.Lowercase()]
        )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _check_text(text: object, name: str) -> None:
    if isinstance(text, (bytes, bytearray)):
        raise TypeError(
            f"{name} is bytes; decode it to str first, e.g. text.decode('utf-8', errors='replace')"
        )
    if not isinstance(text, str):
        raise TypeError(f"{name} must be str, got {type(text).__name__}")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_unicode_message(name: str) -> str:
    return (
        f"{name} is not valid Unicode (it holds a lone surrogate); clean it first, e.g. "
        "text.encode('utf-8', errors='replace').decode('utf-8')"
    )
