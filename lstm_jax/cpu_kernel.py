"""The fused engine's two loops as native code on a CPU backend (`fused.KERNELS`' "cpu").

XLA runs each step of a loop as a chain of small ops, each through memory, and a small
layer's chain on one core, so a user's one-device step leaves the other cores idle. The
C++ beside this module (`cpu_kernel.cc`) runs a whole loop in one XLA FFI call: each
thread takes a block of the batch's sequences through every step, and a step's matmul,
gates and stores run on rows the thread has in cache. The loops compute what
`fused._forward_loop` and `fused._backward_loop` compute (float32, within rounding). A third
handler computes the weight and bias gradients of the small layers (`weight_grad`); the
input gradients, and the weight gradients of larger layers, stay XLA's matmuls.

It takes float32 layers with float32 matmuls whose hidden size is a multiple of 16, and
whose weights (`(E + H) x 4H`) fit in 1 MiB or whose batch gives every thread a block of at
least 4 sequences (wider layers with fewer rows a thread, which read all the weights from
memory every step for one or two rows, ran slower than XLA's loop); AVX-512 on Linux. The
library is built on first use with the system's C++ compiler (`$CXX`, else `c++`) for this
CPU (`-march=native`), against the FFI headers that jaxlib ships, into
`$LSTM_JAX_NATIVE_CACHE` (default `$XDG_CACHE_HOME/lstm_jax/native`, else
`~/.cache/lstm_jax/native`), one file per source, compiler, jax version and CPU. Without a
compiler or AVX-512, or with `LSTM_JAX_NATIVE=0`, layers run `fused`'s `lax` loops.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import host

Array = jax.Array

SOURCE = Path(__file__).with_suffix(".cc")
ENV_SWITCH = "LSTM_JAX_NATIVE"  # "0": never build or use the native loops
ENV_CACHE = "LSTM_JAX_NATIVE_CACHE"  # the folder of the built library
MAX_WEIGHT_BYTES = 2**20  # weights that any batch runs faster
MIN_ROWS = 4  # the sequences a thread needs for larger weights (the C++ kRows)
MAX_GRAD_BYTES = 2**18  # the weight gradients `weight_grad` computes faster than XLA
TARGETS = {
    "lstm_forward": "LstmForward",
    "lstm_backward": "LstmBackward",
    "lstm_weight_grad": "LstmWeightGrad",
}


def _cpu_flags() -> set[str]:
    """This CPU's feature flags (Linux' /proc/cpuinfo); empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cache_dir() -> Path | None:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    return host.user_cache_dir("native")


def _build(compiler: str, target: Path) -> None:
    """Compile `SOURCE` into the shared library `target` (written whole, then renamed, so
    processes building at once never load half a file)."""
    command = [
        compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread", "-w",
        f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o",
    ]  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        done = subprocess.run([*command, str(built)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-2000:] or f"{compiler} failed")
        os.replace(built, target)


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The built library, its FFI targets registered; None where it cannot run here."""
    if platform.system() != "Linux":
        return None
    flags = _cpu_flags()
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    folder = _cache_dir()
    if "avx512f" not in flags or compiler is None or folder is None:
        return None
    versions = f"{compiler} jax {jax.__version__} jaxlib {importlib.metadata.version('jaxlib')}"
    parts = [SOURCE.read_bytes(), versions.encode(), *sorted(map(str.encode, flags))]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    target = folder / f"lstm_cpu_{key}.so"
    try:
        if not target.exists():
            _build(compiler, target)
        library = ctypes.CDLL(str(target))
    except (OSError, RuntimeError) as error:
        warnings.warn(
            f"lstm_jax could not build its native CPU loops ({error}); fused layers run "
            f"XLA's loops instead. Set {ENV_SWITCH}=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    for name, symbol in TARGETS.items():
        handler = jax.ffi.pycapsule(getattr(library, symbol))
        jax.ffi.register_ffi_target(name, handler, platform="cpu")
    return library


def takes(features: int, hidden: int, batch: int, dtype: Any, matmul_dtype: Any = None) -> bool:
    """Whether the native loops run a fused layer of `features` inputs and `hidden` units
    on `batch` sequences, with `dtype` inputs and `matmul_dtype` matmuls (None: the
    inputs' dtype), here: see the module docstring. Builds the library the first time it
    is asked on a CPU backend."""
    weights = 4 * (features + hidden) * 4 * hidden
    fits = (
        jnp.dtype(dtype) == jnp.float32
        and jnp.dtype(matmul_dtype or dtype) == jnp.float32
        and hidden % 16 == 0
        and (weights <= MAX_WEIGHT_BYTES or batch >= MIN_ROWS * _threads())
    )
    switched_on = os.environ.get(ENV_SWITCH, "1") != "0"
    return fits and switched_on and jax.default_backend() == "cpu" and _library() is not None


def _threads() -> int:
    """Threads per call: this process' cores shared among its CPU devices, which run their
    shares of a data-parallel step at the same time."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, len(jax.local_devices(backend="cpu"))))


def forward(
    wu: Array, bias: Array, x_DTBE: Array, m_DTB: Array
) -> tuple[tuple[Array, Array], tuple[Array, ...], Array, Array]:
    """The forward loop on `wu = [W; U] <[D, E + H, 4H]>` and `bias <[D, 4H]>`:
    `((h, c), (i, f, g, o, c_prev), xh_T, ys)` as `fused._forward_loop` returns the first
    three (`xh_T` float32, its row of ones not yet set), and the outputs
    `ys <float32>[D, time, batch, H]`, zero on padded steps, which the loop writes as it
    goes (XLA would read them back from `xh_T` through a transpose)."""
    directions, time, batch, embed = x_DTBE.shape
    hidden = wu.shape[-1] // 4
    step = jax.ShapeDtypeStruct((directions, time, batch, hidden), jnp.float32)
    xh_T = jax.ShapeDtypeStruct((directions, embed + hidden + 1, time, batch), jnp.float32)
    carry = jax.ShapeDtypeStruct((directions, batch, hidden), jnp.float32)
    outputs = (step,) * 5 + (xh_T, carry, carry, step)
    call = jax.ffi.ffi_call("lstm_forward", outputs, vmap_method="sequential")
    *stored, xh_T, h, c, ys = call(x_DTBE, m_DTB, wu, bias, threads=np.int64(_threads()))
    return (h, c), tuple(stored), xh_T, ys


def backward(
    stored: tuple[Array, ...], m_DTB: Array, dys: Array, dh: Array, dc: Array, u_T: Array
) -> Array:
    """The backward loop: `dz <float32>[D, time, batch, 4H]`, as `fused._backward_loop`
    stores it, from the stored gates and cell states, the outputs' cotangents `dys`, the
    final carry's `(dh, dc)` and the recurrent kernels transposed, `u_T <[D, 4H, H]>`."""
    directions, time, batch, hidden = dys.shape
    dz = jax.ShapeDtypeStruct((directions, time, batch, 4 * hidden), jnp.float32)
    call = jax.ffi.ffi_call("lstm_backward", dz, vmap_method="sequential")
    return call(*stored, m_DTB, dys, dh, dc, u_T, threads=np.int64(_threads()))


def weight_grad_fits(features: int, hidden: int) -> bool:
    """Whether `weight_grad` runs a layer's weight gradient: where the gradient
    (`(E + H + 1) x 4H` floats) fits in `MAX_GRAD_BYTES`, as the tutorial models' do.
    Larger ones stay XLA's matmul, which was faster on them (`benchmarks/HISTORY.md`)."""
    return 4 * (features + hidden + 1) * 4 * hidden <= MAX_GRAD_BYTES


def weight_grad(xh: Array, dz: Array) -> Array:
    """`xh @ dz` for each direction, `<float32>[D, E + H + 1, 4H]`: the weight and bias
    gradients from `xh <[D, E + H + 1, time x batch]>` (`xh_T`, its row of ones set) and
    `dz <[D, time x batch, 4H]>`, as `fused._fused_bwd` computes them with XLA's matmul
    (within rounding: the sum runs in another order). XLA ran the BiLSTM's
    (`[129, 8192] x [8192, 256]`) at about half a core's rate."""
    directions, rows, _ = xh.shape
    out = jax.ShapeDtypeStruct((directions, rows, dz.shape[-1]), jnp.float32)
    call = jax.ffi.ffi_call("lstm_weight_grad", out, vmap_method="sequential")
    return call(xh, dz, threads=np.int64(_threads()))
