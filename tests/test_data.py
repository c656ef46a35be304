"""IMDB loading, the validation split and bucketed batches, on tiny data made in `tmp_path`."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lstm_jax.tasks.sentiment import data
from lstm_jax.tasks.sentiment.data import BUCKET_BOUNDARIES, Batch, DataError, Split

# (split, class, file name) -> raw bytes; ids chosen so numeric and string order differ.
REVIEWS: dict[tuple[str, str, str], bytes] = {
    ("train", "pos", "10_9.txt"): b"A great film.",
    ("train", "pos", "2_8.txt"): "Très bien, ünïcode ☃ works.".encode(),
    ("train", "neg", "7_1.txt"): b"Dull  and\tlong.<br /><br />Skip it.",
    ("train", "neg", "11_2.txt"): b"bad bytes \xff\xfe here",
    ("test", "pos", "3_10.txt"): b"Loved it.",
    ("test", "neg", "0_3.txt"): b"Hated it.",
    ("test", "neg", "100_4.txt"): b"",
}


def write_folder(root: Path, reviews=REVIEWS) -> Path:
    for (split, cls, name), raw in reviews.items():
        folder = root / "aclImdb" / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(raw)
    return root


def write_tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def review_members(reviews=REVIEWS) -> list[tuple[str, bytes]]:
    return [(f"aclImdb/{s}/{c}/{n}", raw) for (s, c, n), raw in reviews.items()]


def assert_same_splits(a: dict[str, Split], b: dict[str, Split]) -> None:
    assert a.keys() == b.keys() == {"train", "test"}
    for name in a:
        assert a[name].texts == b[name].texts
        np.testing.assert_array_equal(a[name].labels, b[name].labels)


# ----------------------------------------------------------------------------------
# load_imdb
# ----------------------------------------------------------------------------------
def test_tar_gz_and_folder_give_identical_splits(tmp_path):
    from_folder = data.load_imdb(write_folder(tmp_path / "dir"))
    from_tar = data.load_imdb(write_tar(tmp_path / "imdb.tar.gz", review_members()))
    assert_same_splits(from_folder, from_tar)


def test_splits_sorted_by_label_then_numeric_id(tmp_path):
    splits = data.load_imdb(write_folder(tmp_path))
    train = splits["train"]
    assert train.texts[0].startswith("Dull") and train.texts[1].startswith("bad bytes")
    assert train.texts[2].startswith("Très") and train.texts[3] == "A great film."
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1])
    assert train.labels.dtype == np.int32
    assert len(splits["test"]) == 3


def test_folder_that_is_aclimdb_itself_loads(tmp_path):
    root = write_folder(tmp_path)
    assert_same_splits(data.load_imdb(root / "aclImdb"), data.load_imdb(root))


def test_original_archive_layout_with_extras_in_any_order_loads(tmp_path):
    extras = [
        ("aclImdb/README", b"readme"),
        ("aclImdb/imdb.vocab", b"the\nand\n"),
        ("aclImdb/train/labeledBow.feat", b"0 0:1\n"),
        ("aclImdb/train/urls_pos.txt", b"http://example\n"),
        ("aclImdb/train/unsup/5_0.txt", b"unlabelled review"),
    ]
    members = list(reversed(review_members())) + extras
    plain = write_tar(tmp_path / "plain.tar", members, mode="w")
    assert_same_splits(data.load_imdb(plain), data.load_imdb(write_folder(tmp_path / "d")))


def test_a_review_named_twice_in_a_tar_counts_once(tmp_path):
    members = [*review_members(), ("./aclImdb/test/pos/3_10.txt", b"Loved it, really.")]
    test = data.load_imdb(write_tar(tmp_path / "dup.tar.gz", members))["test"]
    assert len(test) == 3 and "Loved it, really." in test.texts


def test_invalid_utf8_is_replaced(tmp_path):
    train = data.load_imdb(write_folder(tmp_path))["train"]
    assert "bad bytes \ufffd\ufffd here" in train.texts


def test_env_var_names_the_archive_when_none_is_given(tmp_path, monkeypatch):
    archive = write_tar(tmp_path / "imdb.tgz", review_members())
    monkeypatch.setenv(data.ARCHIVE_ENV, str(archive))
    assert len(data.load_imdb()["train"]) == 4


def test_missing_path_raises_with_layout(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*aclImdb/\{train,test\}/\{pos,neg\}"):
        data.load_imdb(tmp_path / "nope.tar.gz")


def test_garbage_bytes_raise_not_a_tar(tmp_path):
    path = tmp_path / "imdb.tar.gz"
    path.write_bytes(b"this is not an archive at all" * 20)
    with pytest.raises(DataError, match=r"cannot read .* as a tar archive.*\{pos,neg\}"):
        data.load_imdb(path)


def test_truncated_tar_gz_raises(tmp_path):
    rng = np.random.default_rng(0)
    members = [(f"aclImdb/train/pos/{i}_7.txt", rng.bytes(2000)) for i in range(8)]
    whole = write_tar(tmp_path / "whole.tar.gz", members).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"truncated.*aclImdb/\{train,test\}"):
        data.load_imdb(cut)


def test_tar_with_wrong_layout_raises(tmp_path):
    members = [(f"reviews/{n}", raw) for (_, _, n), raw in REVIEWS.items()]
    with pytest.raises(DataError, match=r"layout aclImdb/\{train,test\}/\{pos,neg\}/\*\.txt"):
        data.load_imdb(write_tar(tmp_path / "x.tar.gz", members))


def test_folder_with_an_empty_class_raises_naming_it(tmp_path):
    reviews = {k: v for k, v in REVIEWS.items() if k[:2] != ("test", "neg")}
    with pytest.raises(DataError, match="no reviews in test/neg"):
        data.load_imdb(write_folder(tmp_path, reviews))


def test_no_archive_and_no_tensorflow_says_how_to_install_it_or_pass_one(monkeypatch):
    monkeypatch.delenv(data.ARCHIVE_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import now raises ImportError
    with pytest.raises(DataError, match=rf"\.\[tfds\].*--data PATH.*{data.ARCHIVE_ENV}"):
        data.load_imdb()


# ----------------------------------------------------------------------------------
# split_validation
# ----------------------------------------------------------------------------------
def make_split(n: int = 40) -> Split:
    return Split([f"review {i}" for i in range(n)], np.arange(n) % 2)


def test_validation_split_is_disjoint_and_covers_the_split():
    split = make_split()
    rest, held = data.split_validation(split, 0.25, seed=0)
    assert len(held) == 10 and len(rest) == 30
    assert set(rest.texts).isdisjoint(held.texts)
    assert set(rest.texts) | set(held.texts) == set(split.texts)


def test_validation_split_is_stratified():
    _, held = data.split_validation(make_split(), 0.25, seed=0)
    np.testing.assert_array_equal(np.bincount(held.labels), [5, 5])


def test_validation_split_depends_only_on_seed():
    split = make_split()
    assert data.split_validation(split, 0.25, 3)[1].texts == (
        data.split_validation(split, 0.25, 3)[1].texts
    )
    assert data.split_validation(split, 0.25, 3)[1].texts != (
        data.split_validation(split, 0.25, 4)[1].texts
    )


def test_validation_fraction_outside_0_1_raises():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        data.split_validation(make_split(), 1.0, seed=0)


# ----------------------------------------------------------------------------------
# batches
# ----------------------------------------------------------------------------------
def make_sequences(lengths) -> list[np.ndarray]:
    """Sequence i is `lengths[i]` copies of i + 1, so a row names its example."""
    return [np.full(n, i + 1, dtype=np.int32) for i, n in enumerate(lengths)]


LENGTHS = [0, 1, 5, 63, 64, 65, 100, 200, 300, 700, 1500, 3000, 5000, 9000, 7, 8, 9, 130]


def epoch(lengths=LENGTHS, **kw) -> list[Batch]:
    kw = {"batch_size": 4, "shuffle": True, "seed": 0, "epoch": 0} | kw
    return list(data.batches(make_sequences(lengths), np.arange(len(lengths)) % 2, **kw))


def test_every_batch_has_a_shape_from_the_fixed_set():
    allowed = {(4, b) for b in BUCKET_BOUNDARIES} | {(4, 8192), (4, 12288)}
    for batch in epoch():
        assert batch.tokens.shape in allowed
        assert batch.lengths.shape == batch.labels.shape == batch.weights.shape == (4,)
        assert batch.tokens.dtype == batch.lengths.dtype == batch.labels.dtype == np.int32
        assert batch.weights.dtype == np.float32


def test_every_real_example_appears_exactly_once_per_epoch():
    lengths = [n + 1 for n in LENGTHS]  # no empty sequence, so every row names its example
    seen = []
    for batch in epoch(lengths):
        real = batch.weights == 1
        seen += list(batch.tokens[real, 0] - 1)
        np.testing.assert_array_equal(batch.lengths[real], np.take(lengths, seen[-real.sum() :]))
    assert sorted(seen) == list(range(len(lengths)))


def test_rows_hold_their_sequence_then_zero_padding():
    for batch in epoch():
        for row, n in zip(batch.tokens, batch.lengths, strict=True):
            assert np.all(row[n:] == 0) and np.all(row[:n] == row[0])


def test_filler_rows_have_weight_zero_and_length_zero():
    batches = epoch()
    weights = np.concatenate([b.weights for b in batches])
    assert weights.sum() == len(LENGTHS)
    filler_lengths = np.concatenate([b.lengths[b.weights == 0] for b in batches])
    assert filler_lengths.size > 0 and np.all(filler_lengths == 0)


def test_labels_follow_their_examples():
    for batch in epoch([n + 1 for n in LENGTHS]):
        real = batch.weights == 1
        np.testing.assert_array_equal(batch.labels[real], (batch.tokens[real, 0] - 1) % 2)


def test_same_seed_and_epoch_give_the_same_batches():
    for a, b in zip(epoch(seed=5, epoch=2), epoch(seed=5, epoch=2), strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_another_epoch_gives_another_order():
    first = [b.tokens[:, 0].tolist() for b in epoch(epoch=0)]
    second = [b.tokens[:, 0].tolist() for b in epoch(epoch=1)]
    assert first != second


def test_unshuffled_epoch_goes_shortest_bucket_first():
    widths = [b.tokens.shape[1] for b in epoch(shuffle=False)]
    assert widths == sorted(widths)


def test_max_len_truncates_to_the_first_tokens():
    seqs = [np.arange(1, 301, dtype=np.int32), np.arange(1, 11, dtype=np.int32)]
    out = list(data.batches(seqs, [1, 0], batch_size=2, shuffle=False, max_len=100))
    assert [(b.tokens.shape, b.lengths[0]) for b in out] == [((2, 64), 10), ((2, 100), 100)]
    np.testing.assert_array_equal(out[1].tokens[0], np.arange(1, 101))


def test_max_len_bounds_the_bucket_boundaries():
    assert data.bucket_boundaries(200) == (64, 128, 192, 200)


def test_lengths_past_the_last_boundary_pad_to_its_multiples():
    last = BUCKET_BOUNDARIES[-1]
    got = data.padded_lengths(np.array([0, 64, 65, last, last + 1]), BUCKET_BOUNDARIES)
    np.testing.assert_array_equal(got, [64, 64, 128, last, 2 * last])


def test_empty_sequences_and_empty_input_do_not_crash():
    out = list(data.batches([np.zeros(0, np.int32)] * 3, [0, 1, 0], batch_size=2, shuffle=True))
    assert [b.tokens.shape for b in out] == [(2, 64), (2, 64)]
    assert sum(b.weights.sum() for b in out) == 3
    assert list(data.batches([], [], shuffle=True)) == []


def test_num_batches_counts_the_epoch():
    assert data.num_batches(make_sequences(LENGTHS), batch_size=4) == len(epoch())


def test_padding_fraction_of_a_hand_made_case():
    # One bucket (padded to 64), batch 4: lengths 64 + 32 + 0 (empty review) + filler row.
    out = list(data.batches(make_sequences([64, 32, 0]), [1, 0, 1], batch_size=4, shuffle=False))
    assert data.padding_fraction(out) == pytest.approx(1 - 96 / (4 * 64))


def test_mismatched_labels_raise():
    with pytest.raises(ValueError, match="labels must be"):
        next(data.batches(make_sequences([3, 4]), [1], shuffle=False))
