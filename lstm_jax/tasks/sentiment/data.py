"""IMDB reviews in, fixed-shape padded batches out (NumPy only; no TensorFlow on the hot path).

Three parts, in the order a job uses them:

1. `load_imdb` reads the 50,000 labelled reviews into two `Split`s, "train" and "test",
   from an archive or folder in the `aclImdb/{train,test}/{pos,neg}/*.txt` layout (no
   network), or, when no archive is given, from TensorFlow Datasets' `imdb_reviews`.
   Labels: 0 negative, 1 positive (TFDS' convention).
2. `split_validation` holds out a seeded, stratified slice of the training split.
3. `batches` groups token sequences into length buckets and yields `Batch`es of one fixed
   batch size whose padded lengths come from a small fixed set (`bucket_boundaries`), so
   a jitted step compiles once per bucket and never again. It is the lecture's
   `shuffle(...).padded_batch(64)` with bucketing, and epoch `e` of seed `s` is the same
   sequence of batches in every run (exact resume).

Padding is on the right with id 0. A review of length 0 stays length 0 (the model then
sees only its initial state, which the recurrence defines); a filler row that tops up a
bucket's last batch also has length 0, and weight 0 so it counts in no loss or metric.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lstm_jax.tasks.errors import DataError

ARCHIVE_ENV = "LSTM_JAX_IMDB_ARCHIVE"
LAYOUT = "aclImdb/{train,test}/{pos,neg}/*.txt"
SPLITS = ("train", "test")
CLASSES = ("neg", "pos")  # index = label
DEFAULT_BATCH_SIZE = 64

# Padded lengths of the buckets: 12 multiples of 64 up to 4,096, dense where most reviews
# fall (the training reviews are 11 to 3,853 subword tokens long, median 243, mean 330), so
# one shuffled epoch of the training split is about 17% padding. A longer sequence is padded
# to a multiple of the last boundary, so unusual data adds only a few more shapes.
BUCKET_BOUNDARIES: tuple[int, ...] = (64, 128, 192, 256, 320, 384, 512, 640, 768, 1024, 1536, 4096)

_MEMBER_RE = re.compile(r"^(?:\./)?(?:aclImdb/)?(train|test)/(pos|neg)/([^/]+)\.txt$")
_REVIEW_ID_RE = re.compile(r"^(\d+)_(\d+)$")


# ----------------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Split:
    """Reviews and their labels: `texts` (list of str) and `labels <int32>[n]` (0 negative,
    1 positive), in a fixed order."""

    texts: list[str]
    labels: np.ndarray

    def __post_init__(self):
        labels = np.asarray(self.labels, dtype=np.int32)
        if labels.shape != (len(self.texts),):
            raise ValueError(
                f"labels must be [n] = [{len(self.texts)}] to match texts, got {labels.shape}"
            )
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices: Sequence[int] | np.ndarray) -> Split:
        """The examples at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return Split([self.texts[i] for i in indices], self.labels[indices])


def load_imdb(
    archive: str | Path | None = None, *, tfds_data_dir: str | None = None
) -> dict[str, Split]:
    """The labelled IMDB reviews: `{"train": Split, "test": Split}`, 25,000 each.

    `archive` (or, when it is None, the environment variable `LSTM_JAX_IMDB_ARCHIVE`) is a
    `.tar.gz` / `.tgz` / `.tar` file or a folder in the layout
    `aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt` (the folder may be `aclImdb` itself
    or hold it). The original `aclImdb_v1.tar.gz` works as it is: other members (README,
    imdb.vocab, unsup/, bag-of-words files) are skipped. Text is decoded as UTF-8 with bad
    bytes replaced by U+FFFD. Examples are sorted by label, then by numeric review id, so
    the order never depends on the archive's member order. Nothing touches the network.

    With neither, the reviews come from TensorFlow Datasets (`imdb_reviews/plain_text`,
    downloaded into `tfds_data_dir` or TFDS' default); that needs TensorFlow, which the
    `tfds` extra installs (`pip install -e '.[tfds]'`).

    Raises `DataError` saying what was wrong: a missing path, a file that is not a (whole)
    tar archive, a wrong layout or an empty split or class; or, without an archive, that
    TFDS could not provide the data.
    """
    if archive is None:
        archive = os.environ.get(ARCHIVE_ENV) or None
    if archive is None:
        return _load_from_tfds(tfds_data_dir)
    path = Path(archive).expanduser()
    if not path.exists():
        raise DataError(
            f"IMDB archive {str(path)!r} does not exist; pass the path of aclImdb_v1.tar.gz "
            f"(or of a folder) with the reviews in the layout {LAYOUT}"
        )
    found = _read_folder(path) if path.is_dir() else _read_tar(path)
    return _to_splits(found, path)


def _read_folder(path: Path) -> dict[tuple[str, int], list[tuple[tuple, str]]]:
    root = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    found: dict[tuple[str, int], list[tuple[tuple, str]]] = {}
    for split in SPLITS:
        for label, cls in enumerate(CLASSES):
            folder = root / split / cls
            files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
            found[split, label] = [
                (_sort_key(f.stem), _decode(f.read_bytes())) for f in files if f.is_file()
            ]
    return found


def _read_tar(path: Path) -> dict[tuple[str, int], list[tuple[tuple, str]]]:
    """One streaming pass over the archive (works for gzip, bzip2, xz or plain tar)."""
    # Keyed by (split, class, file stem), so "./aclImdb/..." and "aclImdb/..." are one
    # review; a repeated member replaces the earlier one, as extracting the tar would.
    by_name: dict[tuple[str, str, str], tuple[str, int, tuple, str]] = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                match = _MEMBER_RE.match(member.name)
                if not (match and member.isfile()):
                    continue
                split, cls, stem = match.groups()
                reader = tar.extractfile(member)
                text = _decode(reader.read())
                by_name[split, cls, stem] = (split, CLASSES.index(cls), _sort_key(stem), text)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(
            f"cannot read {str(path)!r} as a tar archive ({type(e).__name__}: {e}); it may "
            f"be truncated or not an archive. Expected a .tar.gz, .tgz or .tar (or a folder) "
            f"holding the reviews in the layout {LAYOUT}; download it again if it is damaged"
        ) from e
    found: dict[tuple[str, int], list[tuple[tuple, str]]] = {
        (split, label): [] for split in SPLITS for label in range(len(CLASSES))
    }
    for split, label, key, text in by_name.values():
        found[split, label].append((key, text))
    return found


def _to_splits(
    found: dict[tuple[str, int], list[tuple[tuple, str]]], path: Path
) -> dict[str, Split]:
    counts = {f"{split}/{CLASSES[label]}": len(items) for (split, label), items in found.items()}
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise DataError(
            f"{str(path)!r} does not hold the IMDB reviews in the layout {LAYOUT}: no reviews "
            f"in {', '.join(empty)} (found {counts}); point to aclImdb_v1.tar.gz or to a "
            "folder with that layout"
        )
    splits = {}
    for split in SPLITS:
        texts, labels = [], []
        for label in range(len(CLASSES)):
            for _, text in sorted(found[split, label], key=lambda item: item[0]):
                texts.append(text)
                labels.append(label)
        splits[split] = Split(texts, np.asarray(labels, dtype=np.int32))
    return splits


def _sort_key(stem: str) -> tuple:
    """`<id>_<rating>` sorts by numeric id; any other name after those, by name."""
    match = _REVIEW_ID_RE.match(stem)
    return (0, int(match.group(1)), stem) if match else (1, 0, stem)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _load_from_tfds(data_dir: str | None) -> dict[str, Split]:
    hint = (
        f"pass --data PATH or set {ARCHIVE_ENV}=PATH to a copy of aclImdb_v1.tar.gz "
        f"(or a folder in the layout {LAYOUT})"
    )
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"no IMDB archive was given and TensorFlow Datasets cannot load imdb_reviews "
            f"({e}); install TensorFlow for it with `pip install -e '.[tfds]'`, or {hint}"
        ) from e
    try:  # TensorFlow must not take the accelerator from JAX.
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF was initialised already; its devices can no longer change.
        pass
    try:
        train, test = tfds.load(
            "imdb_reviews/plain_text",
            split=["train", "test"],
            as_supervised=True,
            data_dir=data_dir,
        )
        splits = {}
        for name, ds in (("train", train), ("test", test)):
            texts, labels = [], []
            for text, label in tfds.as_numpy(ds):
                texts.append(_decode(text))
                labels.append(int(label))
            splits[name] = Split(texts, np.asarray(labels, dtype=np.int32))
    except Exception as e:  # download, checksum or parsing failures all end here
        raise DataError(
            f"TensorFlow Datasets could not provide imdb_reviews ({type(e).__name__}: {e}); {hint}"
        ) from e
    return splits


# Words of `write_toy_imdb`'s reviews: a positive review holds words of "pos", a negative
# one words of "neg", among "filler" words.
_TOY_WORDS = {
    "pos": ["great", "wonderful", "moving", "superb", "loved"],
    "neg": ["awful", "boring", "dull", "terrible", "hated"],
    "filler": ["the", "film", "plot", "actor", "scene", "was", "and", "a", "it", "story"],
}


def write_toy_imdb(
    root: str | Path, *, train_per_class: int = 48, test_per_class: int = 16, seed: int = 0
) -> Path:
    """Write a small, learnable stand-in for IMDB under `root` and return `root`.

    The reviews go to `root/aclImdb/{train,test}/{pos,neg}/<i>_<rating>.txt`, the layout
    `load_imdb` reads, `train_per_class` and `test_per_class` per class. Each review is 3
    to 39 filler words with 1 to 3 sentiment words of its class inserted, drawn by
    `np.random.default_rng(seed)`, so a model learns it in a few steps: data for tests,
    notebooks and smoke runs, with no download.
    """
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        _check_positive_int(value, name)
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for cls in ("pos", "neg"):
            folder = root / "aclImdb" / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                words = list(rng.choice(_TOY_WORDS["filler"], rng.integers(3, 40)))
                for _ in range(rng.integers(1, 4)):
                    words.insert(rng.integers(0, len(words) + 1), rng.choice(_TOY_WORDS[cls]))
                rating = 7 if cls == "pos" else 2
                (folder / f"{i}_{rating}.txt").write_text(" ".join(words), encoding="utf-8")
    return root


def split_validation(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """`(rest, held_out)`: a seeded, stratified `fraction` of `split` held out.

    Each class gives `round(fraction * its size)` examples, chosen by
    `np.random.default_rng(seed)`; both parts keep `split`'s order. The same split,
    fraction and seed always give the same parts.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(split.labels):
        members = np.flatnonzero(split.labels == label)
        count = round(fraction * members.size)
        held.append(rng.permutation(members)[:count])
    is_held = np.zeros(len(split), dtype=bool)
    if held:
        is_held[np.concatenate(held)] = True
    if is_held.all() or not is_held.any():
        raise ValueError(
            f"fraction={fraction} of {len(split)} examples leaves one part empty; "
            "choose a fraction that keeps examples on both sides"
        )
    return split.take(np.flatnonzero(~is_held)), split.take(np.flatnonzero(is_held))


# ----------------------------------------------------------------------------------
# Bucketed batches.
# ----------------------------------------------------------------------------------
class Batch(NamedTuple):
    """One padded batch; every field has `batch_size` rows.

    tokens:  `<int32>[batch, time]` token ids, 0 past each row's length.
    lengths: `<int32>[batch]` real tokens per row (0 for filler rows and empty reviews).
    labels:  `<int32>[batch]` 0 negative, 1 positive (0 in filler rows).
    weights: `<float32>[batch]` 1 for a real example, 0 for a filler row.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    weights: np.ndarray


def bucket_boundaries(max_len: int | None = None) -> tuple[int, ...]:
    """The padded lengths in use: `BUCKET_BOUNDARIES`, or, with `max_len`, those below it
    and `max_len` itself as the last (so truncated sequences never overflow)."""
    if max_len is None:
        return BUCKET_BOUNDARIES
    _check_positive_int(max_len, "max_len")
    return (*(b for b in BUCKET_BOUNDARIES if b < max_len), max_len)


def padded_lengths(lengths: np.ndarray, boundaries: Sequence[int]) -> np.ndarray:
    """`<int64>[n]` padded length of each sequence: the smallest boundary that holds it,
    or, past the last boundary, the next multiple of the last boundary."""
    bounds = np.asarray(boundaries, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    which = np.searchsorted(bounds, lengths, side="left")
    inside = which < bounds.size
    last = bounds[-1]
    overflow = -(-lengths // last) * last  # ceil to a multiple of the last boundary
    return np.where(inside, bounds[np.minimum(which, bounds.size - 1)], overflow)


def batches(
    token_ids: Sequence[np.ndarray],
    labels: Sequence[int] | np.ndarray,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    max_len: int | None = None,
) -> Iterator[Batch]:
    """One epoch of bucketed, padded batches over `token_ids` (each `<int>[length]`).

    Sequences are grouped by padded length (`padded_lengths` over
    `bucket_boundaries(max_len)`) and cut into batches of `batch_size` rows; the last
    batch of each bucket is topped up with filler rows (length 0, weight 0), so every
    batch is `(batch_size, padded_length)` with few distinct padded lengths. Each real
    example appears exactly once per epoch.

    `shuffle=True`: the examples within each bucket and then the order of all batches are
    shuffled by a generator seeded with `(seed, epoch)`, so epoch `e` is the same sequence
    of batches in every run and differs from epoch `e + 1`. `shuffle=False`: buckets
    shortest first, examples in their given order (for evaluation).

    `max_len` keeps the first `max_len` tokens of longer reviews; None keeps them whole.
    """
    _check_positive_int(batch_size, "batch_size")
    lengths, labels = _lengths_and_labels(token_ids, labels, max_len)
    for padded_len, rows in _plan(lengths, batch_size, shuffle, seed, epoch, max_len):
        tokens_BT = np.zeros((batch_size, padded_len), dtype=np.int32)
        for row, i in enumerate(rows):
            n = lengths[i]
            tokens_BT[row, :n] = token_ids[i][:n]
        lengths_B = np.zeros(batch_size, dtype=np.int32)
        labels_B = np.zeros(batch_size, dtype=np.int32)
        weights_B = np.zeros(batch_size, dtype=np.float32)
        real = rows.size
        lengths_B[:real] = lengths[rows]
        labels_B[:real] = labels[rows]
        weights_B[:real] = 1.0
        yield Batch(tokens_BT, lengths_B, labels_B, weights_B)


def num_batches(
    token_ids: Sequence[np.ndarray],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_len: int | None = None,
) -> int:
    """How many batches `batches` yields per epoch for these sequences (for progress bars;
    the same for every seed and epoch)."""
    _check_positive_int(batch_size, "batch_size")
    lengths = _lengths(token_ids, max_len)
    _, counts = np.unique(padded_lengths(lengths, bucket_boundaries(max_len)), return_counts=True)
    return int(np.sum(-(-counts // batch_size)))


def padding_fraction(epoch_batches: Iterable[Batch]) -> float:
    """Share of token slots that are padding over `epoch_batches`: `1 - sum(lengths) /
    sum(batch * time)`. Filler rows count as padding (they cost the same compute)."""
    real = total = 0
    for batch in epoch_batches:
        real += int(np.sum(batch.lengths))
        total += batch.tokens.size
    if total == 0:
        raise ValueError("padding_fraction of no batches is undefined")
    return 1.0 - real / total


def _plan(
    lengths: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    max_len: int | None,
) -> list[tuple[int, np.ndarray]]:
    """The epoch's batches as `(padded_length, example indices)` (at most `batch_size`)."""
    if shuffle:
        for value, name in ((seed, "seed"), (epoch, "epoch")):
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    if lengths.size == 0:
        return []
    padded = padded_lengths(lengths, bucket_boundaries(max_len))
    order = np.argsort(padded, kind="stable")  # by bucket, given order within each
    keys, starts = np.unique(padded[order], return_index=True)
    plan = []
    for key, members in zip(keys, np.split(order, starts[1:]), strict=True):
        if shuffle:
            members = rng.permutation(members)
        for start in range(0, members.size, batch_size):
            plan.append((int(key), members[start : start + batch_size]))
    if shuffle:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    return plan


def _lengths(token_ids: Sequence[np.ndarray], max_len: int | None) -> np.ndarray:
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
    if max_len is not None:
        _check_positive_int(max_len, "max_len")
        lengths = np.minimum(lengths, max_len)
    return lengths


def _lengths_and_labels(token_ids, labels, max_len):
    lengths = _lengths(token_ids, max_len)
    labels = np.asarray(labels)
    if labels.shape != lengths.shape:
        raise ValueError(
            f"labels must be [n] = [{lengths.size}] to match token_ids, got {labels.shape}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    return lengths, labels.astype(np.int32)


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
