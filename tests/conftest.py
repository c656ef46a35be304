"""Strict JAX settings for every test: rank promotion raises, float32 matmuls are exact;
two CPU devices, so training runs data-parallel as it does on a 2-core host; no compilation
cache for the commands the tests run."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax

from lstm_jax import host

host.configure(cpu_devices=2, malloc=False)
os.environ[host.ENV_CACHE] = "0"  # the CLI's compilation cache: not in the tests' home

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402

from lstm_jax.data import write_toy_imdb  # noqa: E402


@pytest.fixture(scope="session")
def tiny_imdb(tmp_path_factory):
    """A small IMDB folder in the aclImdb layout whose sentiment is learnable
    (`lstm_jax.data.write_toy_imdb`)."""
    return write_toy_imdb(tmp_path_factory.mktemp("imdb"))
