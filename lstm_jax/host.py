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
  per device on two, 78 MB per device for the stacked model). glibc serves a block that
  large with a fresh `mmap` and gives it back with `munmap`, so every step page-faults its
  temporary memory again (26,000 faults a step here). Raising malloc's mmap threshold and
  never trimming (`tune_malloc`) lets a step reuse the pages of the last, but only where
  the block fits a malloc arena: the arenas of XLA's threads grow to 64 MB at most, and a
  larger block is mapped anew whatever the threshold. With one arena for the whole
  process (`GLIBC_TUNABLES=glibc.malloc.arena_max=1`) every block comes from the main
  arena, which has no such limit: the stacked model's step went from about 850 faults to
  under 10 (108.6-108.9 ms against 119.0-120.2 in paired probes), and one IMDB epoch
  from 45.3-50.9 s to 38.4-41.6 s (huge pages on in both); the whole IMDB job
  (`lstm-jax train --config imdb_bilstm`) from 285 s to 250 s. The costs, also measured:
  threads that allocate in parallel queue on the one arena, the tokenizer's most (data
  preparation 25 s to 71 s), so `training.prepare_data` runs in a child process with the
  default arenas when this process has one (`one_arena`); XLA compiles slower, since its
  two compiling threads queue on the arena too (the IMDB job's 12 shapes 21 s to 28-29 s;
  the stacked model's step 2.2-3.5 s against 1.6-2.1 s, and 2.9-3.5 s either way on one
  core); the `remat` engine's step is 10-25%
  slower, and a short fused step whose temporaries fit the thread arenas anyway a few
  percent (BiLSTM, T=128: 32.7-36.5 against 31.7-32.6 ms), for reasons not found. So
  only `lstm-jax train`, whose default engine gains, asks for one arena. The process also
  keeps its peak heap until it exits. Only glibc (Linux) is tuned; elsewhere this is a
  no-op.
- *Huge pages.* Where a step's temporaries are mapped anew, each 4 KiB page faults on its
  first touch; with malloc asking the kernel for transparent huge pages (2 MiB,
  `glibc.malloc.hugetlb=1`, which matters when the kernel's THP mode is `madvise`) the
  faults drop 512-fold. Measured before one arena: one device 134 to 105 ms, the stacked
  model on two devices 173 to 120 ms. With one arena the blocks stay in the heap and huge
  pages only cost: the few steps that still grow the heap (a freed block reused in part,
  so the next one does not fit) stalled on the kernel's compaction for huge pages, 650-712
  ms against 240 at T=1024 (340-350 ms on 4 KiB pages), and the mean step was 0-19%
  slower (medians equal). So one arena comes without huge pages, and huge pages are only
  for the commands that keep the default arenas.
- glibc reads `GLIBC_TUNABLES` only when a process starts, so the `lstm-jax` command
  relaunches itself once with them (`relaunch_tuned`: `train` with one arena, the other
  commands with huge pages); `$LSTM_JAX_TUNABLES=0` opts out. In a script that trains,
  start Python with `GLIBC_TUNABLES=glibc.malloc.arena_max=1` (`tuned_environment()`
  gives it).

The device count changes nothing on a GPU or TPU backend, where `jax.devices()` lists the
accelerators; the malloc setting still spares the host side its page faults.

`use_compilation_cache()` keeps compiled programs on disk (JAX's persistent compilation
cache), so a later process that compiles the same program for the same shapes, devices,
options and JAX version loads it instead: the IMDB job compiles a train and an evaluation
step for each of its 12 padded lengths, 2-3 s each here, and a second run, a resumed run,
`evaluate` and `predict` skip that. Every `lstm-jax` command but `bench` (which times
compilation) uses it. The folder is `$LSTM_JAX_COMPILATION_CACHE`, by default
`~/.cache/lstm_jax/xla` (under `$XDG_CACHE_HOME` where set); `LSTM_JAX_COMPILATION_CACHE=0`
turns it off. It is capped at `CACHE_MAX_BYTES`, least recently used entries going first.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import jax

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_NEVER = 2**31 - 1  # the largest value mallopt takes: no trimming, no mmap below 2 GiB
ENV_DEVICES = "LSTM_JAX_CPU_DEVICES"  # the default device count, also for child processes
ENV_TUNABLES = "LSTM_JAX_TUNABLES"  # "0": set no glibc tunables (no relaunch, none for children)
ENV_CACHE = "LSTM_JAX_COMPILATION_CACHE"  # the compilation cache's folder; "0": no cache
CACHE_MAX_BYTES = 2**30
CACHE_MIN_COMPILE_S = 0.2  # programs that compile faster are not worth a file
HUGE_PAGES = "glibc.malloc.hugetlb"
ARENA_MAX = "glibc.malloc.arena_max"
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


def compilation_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The compilation cache's folder for `env` (default: this process's environment):
    `$LSTM_JAX_COMPILATION_CACHE`, else `$XDG_CACHE_HOME/lstm_jax/xla`, else
    `~/.cache/lstm_jax/xla`; None when `$LSTM_JAX_COMPILATION_CACHE` is "0", or when
    neither it, `$XDG_CACHE_HOME` nor a home folder is known."""
    env = os.environ if env is None else env
    chosen = env.get(ENV_CACHE, "").strip()
    if chosen == "0":
        return None
    if chosen:
        return Path(chosen).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "lstm_jax" / "xla"
    try:
        return Path.home() / ".cache" / "lstm_jax" / "xla"
    except RuntimeError:  # no $HOME and no user database entry
        return None


def use_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Keep compiled programs in `path` (default `compilation_cache_dir()`) and load them
    from there instead of compiling again (see the module docstring). Returns the folder,
    or None when the cache is off (`$LSTM_JAX_COMPILATION_CACHE=0` and no `path`).

    Call before the first compilation: JAX decides once per process, at its first
    compilation, whether it uses a cache. A folder that cannot be made leaves the cache
    off, with a warning that says how to choose another. So does a machine whose XLA
    rejects the programs it cached itself (XLA's CPU loader refuses any program compiled
    with a CPU tuning flag the host does not list, such as `+prefer-no-gather` on many
    Intel CPUs, with an error line per program): the first use of a folder on a machine
    and JAX version checks that a program comes back from the disk, in a child process
    (under a second here), and records the verdict in the folder.
    """
    folder = compilation_cache_dir() if path is None else Path(path).expanduser()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        warnings.warn(
            f"no compilation cache: cannot make {folder} ({error.strerror or error}); "
            f"set ${ENV_CACHE} to a writable folder, or to 0 to turn the cache off",
            stacklevel=2,
        )
        return None
    problem = _round_trip_verdict(folder)
    if problem:
        warnings.warn(
            f"no compilation cache: this machine's XLA does not load the programs it "
            f"caches ({problem}); set ${ENV_CACHE}=0 to skip this check",
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return folder


_ROUND_TRIP = """
import sys, jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
hits = []
jax.monitoring.register_event_listener(
    lambda name, **_: hits.append(name) if name.endswith("/cache_hits") else None
)
f = jax.jit(lambda x: jnp.tanh(x) * 2.0)
first = f(jnp.arange(3.0))
jax.clear_caches()  # the second call compiles again, so it reads the disk
second = f(jnp.arange(3.0))
sys.exit(0 if hits and bool((first == second).all()) else 3)
"""


def _cache_round_trip() -> tuple[str | None, bool]:
    """Compile a small program into a scratch cache in a child process, drop the child's
    in-memory caches and run it again. Returns (None, True) when it came back from the
    disk, else (why not, whether that is a verdict worth keeping: not when the check
    itself could not run)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        try:
            child = subprocess.run(
                [sys.executable, "-c", _ROUND_TRIP, scratch],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"the check could not run: {error}", False
    if child.returncode == 0:
        return None, True
    lines = [line.strip() for line in child.stderr.splitlines() if line.strip()]
    telling = [line for line in lines if "not supported on the host machine" in line]
    telling += [line.split("UserWarning: ", 1)[1] for line in lines if "UserWarning: " in line]
    why = (telling or lines or [f"the check exited with {child.returncode}"])[0]
    return why[:300], True


def _machine_id() -> str:
    """What the cached programs depend on besides JAX: the CPU's model and features."""
    import hashlib

    text = platform.machine() + platform.processor()
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
        text += "".join(line for line in info if line.startswith(("model name", "flags")))
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _round_trip_verdict(folder: Path) -> str | None:
    """`_cache_round_trip()`'s verdict for this machine and JAX version, checked once and
    recorded in `folder` (an empty file when the round trip worked)."""
    import jaxlib

    record = folder / f"round-trip-{jax.__version__}-{jaxlib.__version__}-{_machine_id()}.txt"
    if record.exists():
        return record.read_text().strip() or None
    problem, verdict = _cache_round_trip()
    if verdict:
        try:
            record.write_text(problem or "")
        except OSError:
            pass  # checked again next time
    return problem


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


def _tunables(env: Mapping[str, str]) -> dict[str, str]:
    """`$GLIBC_TUNABLES` of `env` as {name: value} (`name=value` items joined by `:`)."""
    items = (item.partition("=") for item in env.get(_TUNABLES, "").split(":") if item)
    return {name: value for name, _, value in items}


def _joined(tunables: dict[str, str]) -> str:
    """{name: value} as a `$GLIBC_TUNABLES` value, the inverse of `_tunables`."""
    return ":".join(f"{name}={value}" for name, value in tunables.items())


def one_arena(env: Mapping[str, str] | None = None) -> bool:
    """Whether `env` (default: this process's) limits glibc malloc to one arena."""
    return _tunables(os.environ if env is None else env).get(ARENA_MAX) == "1"


def _thp_on_request() -> bool:
    """Whether the kernel gives transparent huge pages to memory that asks (THP mode
    `madvise`); in mode `always` it gives them anyway, in `never` not at all."""
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return "[madvise]" in mode


def tuned_environment(
    env: Mapping[str, str] | None = None, *, arena: bool = True
) -> dict[str, str]:
    """`env` (default: this process's) for a child process, with malloc tunables added to
    `$GLIBC_TUNABLES` (see the module docstring): with `arena`, one malloc arena
    (`glibc.malloc.arena_max=1`); without, transparent huge pages
    (`glibc.malloc.hugetlb=1`) where the kernel's THP mode makes them count. Tunables
    `env` already sets are kept as they are."""
    env = dict(os.environ if env is None else env)
    tunables = _tunables(env)
    if arena:
        tunables.setdefault(ARENA_MAX, "1")
    elif _thp_on_request():
        tunables.setdefault(HUGE_PAGES, "1")
    if tunables:
        env[_TUNABLES] = _joined(tunables)
    return env


def default_arenas(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) without a one-arena limit: for a child process
    whose threads allocate in parallel (`training.prepare_data`)."""
    env = dict(os.environ if env is None else env)
    tunables = _tunables(env)
    if tunables.pop(ARENA_MAX, None) is not None:
        env[_TUNABLES] = _joined(tunables)
        if not tunables:
            del env[_TUNABLES]
    return env


def relaunch_pending(*, arena: bool) -> bool:
    """Whether this process lacks the glibc tunables `tuned_environment(arena=arena)` adds,
    on glibc (Linux) and without the `$LSTM_JAX_TUNABLES=0` opt-out."""
    if not _on_glibc() or os.environ.get(ENV_TUNABLES) == "0":
        return False
    return tuned_environment(arena=arena).get(_TUNABLES) != os.environ.get(_TUNABLES)


def relaunch_tuned(module: str, argv: list[str], *, arena: bool) -> None:
    """Replace this process by `python -m module argv...` with the malloc tunables of
    `tuned_environment(arena=arena)`, when `relaunch_pending`; otherwise return."""
    if relaunch_pending(arena=arena):
        os.execve(
            sys.executable,
            [sys.executable, "-m", module, *argv],
            tuned_environment(arena=arena),
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
