"""Set up a CPU host for training: one JAX device per core, and a malloc that pages less.

These settings are process-wide and must be made before JAX starts its backends (before the
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
  block does not). Limiting malloc to one arena would cover that case too, but slows the
  tokenizer (data preparation 18 s to 54-77 s), so it is not done. The
  cost: the process keeps its peak heap until it exits. Only glibc (Linux) is tuned;
  elsewhere this is a no-op.
- *Huge pages.* Where a step's temporaries are mapped anew, each 4 KiB page faults on its
  first touch; with malloc asking the kernel for transparent huge pages (2 MiB) the faults
  drop 512-fold. glibc does that with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, which it
  reads only when a process starts, so the `lstm-jax` command relaunches itself once with
  it (`relaunch_with_huge_pages`) when the kernel's THP mode is `madvise`; in a script,
  set it in the environment that starts Python. Measured: one device 134 to 105 ms, the
  stacked model on two devices 173 to 120 ms.

The device count changes nothing on a GPU or TPU backend, where `jax.devices()` lists the
accelerators; the malloc setting still spares the host side its page faults.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import warnings
from pathlib import Path

import jax

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_NEVER = 2**31 - 1  # the largest value mallopt takes: no trimming, no mmap below 2 GiB
ENV_DEVICES = "LSTM_JAX_CPU_DEVICES"  # the default device count, also for child processes
ENV_HUGE_PAGES = "LSTM_JAX_HUGE_PAGES"  # "0": never relaunch for huge pages
HUGE_PAGES = "glibc.malloc.hugetlb"
_TUNABLES = "GLIBC_TUNABLES"


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


def _on_glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def tune_malloc() -> bool:
    """Make glibc malloc reuse large blocks instead of mapping them anew (see the module
    docstring): mmap threshold and trim threshold at their maximum. Returns whether it was
    applied (False where the C library is not glibc)."""
    if not _on_glibc():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, _NEVER), (_M_TRIM_THRESHOLD, _NEVER))
    return all(mallopt(option, value) == 1 for option, value in settings)


def huge_pages_pending() -> bool:
    """Whether this process could get transparent huge pages from malloc but does not yet:
    glibc on Linux, the kernel's THP mode `madvise`, and `glibc.malloc.hugetlb` not set in
    `$GLIBC_TUNABLES` (glibc reads it only when a process starts)."""
    if not _on_glibc():
        return False
    if os.environ.get(ENV_HUGE_PAGES) == "0" or HUGE_PAGES in os.environ.get(_TUNABLES, ""):
        return False
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return "[madvise]" in mode


def environment_with_huge_pages(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with `glibc.malloc.hugetlb=1` added to
    `$GLIBC_TUNABLES`, for a child process (see the module docstring)."""
    env = dict(os.environ if env is None else env)
    tunables = env.get(_TUNABLES, "")
    if HUGE_PAGES not in tunables:
        env[_TUNABLES] = f"{tunables}:{HUGE_PAGES}=1" if tunables else f"{HUGE_PAGES}=1"
    return env


def relaunch_with_huge_pages(module: str, argv: list[str]) -> None:
    """Replace this process by `python -m module argv...` with huge pages for malloc, when
    `huge_pages_pending()`; otherwise return. `$LSTM_JAX_HUGE_PAGES=0` opts out."""
    if huge_pages_pending():
        os.execve(
            sys.executable,
            [sys.executable, "-m", module, *argv],
            environment_with_huge_pages(),
        )


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
