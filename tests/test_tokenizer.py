"""The learned subword tokenizer: exact round trips, determinism, sizes, saving and caching."""

from __future__ import annotations

import numpy as np
import pytest

from lstm_jax.tasks.sentiment.tokenizer import PAD_ID, SubwordTokenizer, normalize_text

WORDS = "the movie was great terrible acting plot boring loved hated film actor scene".split()
CORPUS = [
    " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(5 + i % 9)).capitalize() + "."
    for i in range(200)
] + ["Café ünïcode ☃ 日本語 \ufffd and <br /><br /> tags.", "UPPER case\t\ttabs  and   spaces"]
VOCAB = 320


@pytest.fixture(scope="module")
def tok() -> SubwordTokenizer:
    return SubwordTokenizer.train(CORPUS, vocab_size=VOCAB)


@pytest.mark.parametrize(
    "text",
    [
        "The movie was great.",
        "Ünïcode: café, 日本語, emoji 🎬, replacement \ufffd, never seen: ∮ Ω",
        "  leading and trailing  ",
        "runs\t\t of\n\n\n whitespace \r\n and\u00a0nbsp",
        "MiXeD CaSe WORDS",
        "<pad> is just text",
        "",
    ],
)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_ids_are_int32_and_never_padding(tok):
    ids = tok.encode("The plot was boring, the acting terrible!")
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert ids.min() > PAD_ID and ids.max() < tok.vocab_size


def test_empty_text_encodes_to_an_empty_array(tok):
    ids = tok.encode("")
    assert ids.shape == (0,) and ids.dtype == np.int32


def test_vocab_size_counts_padding_and_matches_the_request(tok):
    assert tok.vocab_size == tok.learned_vocab_size == VOCAB


def test_a_tiny_corpus_learns_fewer_ids_but_keeps_the_requested_size():
    small = SubwordTokenizer.train(["ab ab ab"], vocab_size=500)
    assert small.vocab_size == 500 and 257 < small.learned_vocab_size < 500
    assert small.encode("ab ba ☃").max() < small.learned_vocab_size


def test_learned_subwords_shorten_the_text(tok):
    text = "The movie was great, the acting terrible."
    assert len(tok.encode(text)) < len(text.encode())


def test_training_twice_gives_the_same_vocabulary(tmp_path):
    SubwordTokenizer.train(CORPUS, VOCAB).save(tmp_path / "a.json")
    SubwordTokenizer.train(list(CORPUS), VOCAB).save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_encode_batch_matches_encode(tok):
    texts = [*CORPUS[:5], "", "Ünïcode ☃"]
    for ids, text in zip(tok.encode_batch(texts), texts, strict=True):
        np.testing.assert_array_equal(ids, tok.encode(text))


def test_decode_drops_padding(tok):
    ids = tok.encode("great film")
    assert tok.decode(np.concatenate([ids, np.zeros(4, np.int32)])) == "great film"


def test_a_50000_word_text_round_trips(tok):
    text = " ".join(WORDS[i % len(WORDS)] for i in range(50_000))
    ids = tok.encode(text)
    assert 0 < ids.size < len(text) and tok.decode(ids) == text


def test_bytes_raise_type_error_saying_to_decode(tok):
    with pytest.raises(TypeError, match="decode it to str first"):
        tok.encode(b"bytes review")


def test_save_then_load_encodes_alike(tok, tmp_path):
    tok.save(tmp_path / "run" / "tokenizer.json")
    loaded = SubwordTokenizer.load(tmp_path / "run" / "tokenizer.json")
    assert loaded.vocab_size == tok.vocab_size
    for text in CORPUS[:10]:
        np.testing.assert_array_equal(loaded.encode(text), tok.encode(text))


def test_load_of_another_file_raises(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"something": "else"}')
    with pytest.raises(ValueError, match=r"not a tokenizer saved by SubwordTokenizer\.save"):
        SubwordTokenizer.load(path)


def test_load_or_train_reuses_the_cached_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    first = SubwordTokenizer.load_or_train(path, CORPUS, VOCAB)
    again = SubwordTokenizer.load_or_train(path, ["other texts entirely"] * 3, VOCAB)
    np.testing.assert_array_equal(again.encode(CORPUS[0]), first.encode(CORPUS[0]))


def test_load_or_train_with_another_vocab_size_raises(tmp_path):
    path = tmp_path / "tokenizer.json"
    SubwordTokenizer.load_or_train(path, CORPUS, VOCAB)
    with pytest.raises(ValueError, match=f"learned with vocab_size {VOCAB}, but 300"):
        SubwordTokenizer.load_or_train(path, CORPUS, 300)


def test_vocab_size_below_the_byte_alphabet_raises():
    with pytest.raises(ValueError, match="vocab_size must be an int >= 257"):
        SubwordTokenizer.train(CORPUS, vocab_size=100)


def test_normalizing_tokenizer_round_trips_the_normalized_text(tmp_path):
    tok = SubwordTokenizer.train(CORPUS, VOCAB, normalize=True)
    text = "The Movie<br /><br />was GREAT"
    assert tok.normalizes
    assert tok.decode(tok.encode(text)) == normalize_text(text) == "the movie  was great"
    np.testing.assert_array_equal(tok.encode(text), tok.encode(normalize_text(text)))
    tok.save(tmp_path / "tok.json")
    assert SubwordTokenizer.load(tmp_path / "tok.json").normalizes


def test_load_or_train_with_another_normalization_raises(tmp_path):
    SubwordTokenizer.load_or_train(tmp_path / "tok.json", CORPUS, VOCAB)
    with pytest.raises(ValueError, match="normalize=False, but normalize=True"):
        SubwordTokenizer.load_or_train(tmp_path / "tok.json", CORPUS, VOCAB, normalize=True)
