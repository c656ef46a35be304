"""Strict JAX settings for every test: rank promotion raises, float32 matmuls are exact."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


import numpy as np  # noqa: E402
import pytest  # noqa: E402

_WORDS = {
    "pos": ["great", "wonderful", "moving", "superb", "loved"],
    "neg": ["awful", "boring", "dull", "terrible", "hated"],
    "filler": ["the", "film", "plot", "actor", "scene", "was", "and", "a", "it", "story"],
}


@pytest.fixture(scope="session")
def tiny_imdb(tmp_path_factory):
    """A small IMDB folder in the aclImdb layout whose sentiment is learnable: positive
    reviews hold words from one list, negative ones from another, among filler words."""
    root = tmp_path_factory.mktemp("imdb")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 48), ("test", 16)):
        for label in ("pos", "neg"):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                words = list(rng.choice(_WORDS["filler"], rng.integers(3, 40)))
                for _ in range(rng.integers(1, 4)):
                    words.insert(rng.integers(0, len(words) + 1), rng.choice(_WORDS[label]))
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(" ".join(words))
    return root
