"""Strict JAX settings for every test: rank promotion raises, float32 matmuls are exact;
two CPU devices, so training runs data-parallel as it does on a 2-core host; no compilation
cache for the commands the tests run. XLA's own kernels are compiled without LLVM
optimisation (the same arithmetic, compiled about a third faster), except the trainer's
steps, which name their own level."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    os.environ["XLA_FLAGS"] = flags.strip()

import jax

from lstm_jax import host

host.configure(cpu_devices=2)
os.environ[host.ENV_CACHE] = "0"  # the CLI's compilation cache: not in the tests' home

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402

from lstm_jax.tasks.sentiment.data import write_toy_imdb  # noqa: E402


@pytest.fixture(scope="session")
def tiny_imdb(tmp_path_factory):
    """A small IMDB folder in the aclImdb layout whose sentiment is learnable
    (`lstm_jax.tasks.sentiment.data.write_toy_imdb`)."""
    return write_toy_imdb(tmp_path_factory.mktemp("imdb"))


def on_cpu() -> bool:
    """Whether the tests run on JAX's CPU backend (where the HLO-text checks apply)."""
    return jax.default_backend() == "cpu"


cpu_only = pytest.mark.skipif(not on_cpu(), reason="checks XLA's CPU compilation")


def assert_directional_derivatives(loss, args, *, step=1e-6, rtol=1e-6, seed=0):
    """For every leaf of `args`, the derivative of `loss(*args)` along a random direction
    equals its central difference: run in float64 (`jax.enable_x64`), where the step is
    small enough for the difference to be exact to about 1e-9 relative."""
    import numpy as np

    leaves, tree = jax.tree.flatten(args)
    loss = jax.jit(loss)
    grads = jax.tree.leaves(jax.jit(jax.grad(lambda a: loss(*a)))(args))
    rng = np.random.default_rng(seed)
    for i, (leaf, grad) in enumerate(zip(leaves, grads, strict=True)):
        assert grad.dtype == np.float64
        direction = rng.standard_normal(np.shape(leaf))

        def along(delta, i=i):
            moved = list(leaves)
            moved[i] = leaves[i] + delta
            return loss(*jax.tree.unflatten(tree, moved))

        numeric = (along(step * direction) - along(-step * direction)) / (2 * step)
        np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=rtol, atol=1e-9)
