"""Strict JAX settings for every test: rank promotion raises, float32 matmuls are exact;
two CPU devices, so training runs data-parallel as it does on a 2-core host. XLA's own
kernels are compiled without LLVM optimisation (the same arithmetic, compiled about a third
faster), except the trainer's steps, which name their own level.

One compilation cache per test run, in a temporary folder that the run's workers share
and that goes when the run ends (`$LSTM_JAX_TEST_CACHE` names a folder to keep instead):
many tests compile the same programs (the same tiny model, step and shapes), and each is
compiled once, which takes a quarter off the fast tier. The commands that tests start in
a new process use no cache, so nothing lands in the user's. The native CPU loops
(`lstm_jax.cpu_kernel`) are built into another temporary folder, once per run."""

import os
import shutil
import tempfile
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    os.environ["XLA_FLAGS"] = flags.strip()

import jax

from lstm_jax import cpu_kernel, host

host.configure(cpu_devices=2)
os.environ[host.ENV_CACHE] = "0"  # the CLI's compilation cache: not in the tests' home
# Made by the first process to import this file (xdist's controller, or pytest without
# workers); the workers inherit the variable, so they share the folder.
_CACHE_OWNER = "LSTM_JAX_TEST_CACHE" not in os.environ
if _CACHE_OWNER:
    os.environ["LSTM_JAX_TEST_CACHE"] = tempfile.mkdtemp(prefix="lstm_jax_tests_xla_")
_NATIVE_OWNER = _CACHE_OWNER and cpu_kernel.ENV_CACHE not in os.environ
if _NATIVE_OWNER:
    os.environ[cpu_kernel.ENV_CACHE] = tempfile.mkdtemp(prefix="lstm_jax_tests_native_")

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402

from lstm_jax.tasks.sentiment.data import write_toy_imdb  # noqa: E402


def pytest_configure(config):
    """Turn the run's compilation cache on, caching every program however fast it compiles;
    off, and the run goes on, where this machine's XLA does not load what it cached.

    `host.use_compilation_cache` checks that once per folder, in the first process here
    (xdist's controller configures before it starts the workers, which read its verdict):
    its check writes in the way of a capped cache, which trips over the entries that a
    worker already running would write without a cap."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        folder = host.use_compilation_cache(os.environ["LSTM_JAX_TEST_CACHE"])
    if folder is not None:
        # No size cap: with one, JAX scans the whole folder at every write to evict.
        host._cache_options(folder, min_compile_s=0.0, max_bytes=-1)


def pytest_unconfigure(config):
    if _CACHE_OWNER:
        shutil.rmtree(os.environ["LSTM_JAX_TEST_CACHE"], ignore_errors=True)
    if _NATIVE_OWNER:
        shutil.rmtree(os.environ[cpu_kernel.ENV_CACHE], ignore_errors=True)


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
