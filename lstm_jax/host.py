"""Set up a CPU host for training: one JAX device per core, and a malloc that keeps memory.

Both settings are process-wide and must be made before JAX starts its backends (before the
first array, `jax.devices()` or jit call). `configure()` makes them; the `lstm-jax`
command calls it first thing. In a script or notebook, call it right after the imports:

    import lstm_jax.host
    lstm_jax.host.configure()        # all cores; configure(cpu_devices=1) keeps one device

Why (measured on a 2-core AMD EPYC, jax 0.10.2, BiLSTM train step, batch 64, T=256; the
README has the benchmark's numbers and command):

- *One device per core.* XLA's CPU runtime runs the small per-step work of a recurrence (a
  64-row matmul and a few fusions, T times in a row) on one core. With the host split into
  one CPU device per core, `training.Trainer` gives each device a slice of the batch
  (`shard_map`), so every core runs its own recurrence.
- *Malloc.* XLA allocates each step's temporaries as one block (111 MB on one device, 54 MB
  per device on two). glibc serves a block that large with a fresh `mmap` and gives it back
  with `munmap`, so every step page-faults its temporary memory again (26,000 faults a
  step here). Raising malloc's mmap threshold and never trimming lets a step reuse the
  pages of the last, where the block fits a malloc arena (up to 64 MB for the arenas of
  XLA's threads: the per-device blocks of the data-parallel step do, the single-device
  block does not). Limiting malloc to one arena would cover that case too, but makes the
  tokenizer's threads contend (data preparation 18 s to 77 s), so it is not done. The
  cost: the process keeps its peak heap until it exits. Only glibc (Linux) is tuned;
  elsewhere this is a no-op.

The device count changes nothing on a GPU or TPU backend, where `jax.devices()` lists the
accelerators; the malloc setting still spares the host side its page faults.
"""

from __future__ import annotations

import ctypes
import os
import platform
import warnings

import jax

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_NEVER = 2**31 - 1  # the largest value mallopt takes: no trimming, no mmap below 2 GiB
ENV_DEVICES = "LSTM_JAX_CPU_DEVICES"  # the default device count, also for child processes


def _parse_count(text: str, source: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{source} must be a positive integer, got {text!r}") from None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def backends_started() -> bool:
    """Whether JAX has already started its backends (then device settings are fixed)."""
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def tune_malloc() -> bool:
    """Make glibc malloc reuse large blocks instead of mapping them anew (see the module
    docstring): mmap threshold and trim threshold at their maximum. Returns whether it was applied (False where the C library is not glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, _NEVER), (_M_TRIM_THRESHOLD, _NEVER))
    return all(mallopt(option, value) == 1 for option, value in settings)


def configure(cpu_devices: int | None = None, *, malloc: bool = True) -> int:
    """Split the CPU into `cpu_devices` JAX devices and, with `malloc=True`, tune glibc
    malloc. Returns the number of CPU devices in effect.

    `cpu_devices=None` takes `$LSTM_JAX_CPU_DEVICES` if set, else one per available core.
    Call before any JAX computation. If JAX has already started, the device count cannot
    change: this warns when a different count was asked for, and returns the current one.
    """
    if cpu_devices is None and os.environ.get(ENV_DEVICES):
        cpu_devices = _parse_count(os.environ[ENV_DEVICES], ENV_DEVICES)
    if cpu_devices is not None and (
        isinstance(cpu_devices, bool) or not isinstance(cpu_devices, int) or cpu_devices < 1
    ):
        raise ValueError(f"cpu_devices must be a positive integer, got {cpu_devices!r}")
    if malloc:
        tune_malloc()
    wanted = available_cores() if cpu_devices is None else cpu_devices
    if backends_started():
        current = len(jax.devices("cpu"))
        if cpu_devices is not None and current != cpu_devices:
            warnings.warn(
                f"JAX is already running with {current} CPU device(s); {cpu_devices} cannot "
                "take effect now. Call lstm_jax.host.configure() before any JAX computation "
                "(in a notebook: restart the kernel and call it first).",
                stacklevel=2,
            )
        return current
    jax.config.update("jax_num_cpu_devices", wanted)
    return wanted
