"""Host settings the `lstm-jax` command makes, each a call a script may make too.

Importing `lstm_jax` changes nothing in the process; these functions change what they say,
when called:

- `configure(cpu_devices)`: split the CPU into one JAX device per core (JAX's
  `jax_num_cpu_devices`), so the trainer's data-parallel step runs a recurrence per core:
  XLA's CPU runtime runs each small step of a recurrence on one core. Call it before any
  JAX computation. On a GPU or TPU backend it changes nothing that trains.
- `tune_malloc()`: keep each step's large temporaries in glibc's heap for reuse, instead of
  mapping and page-faulting them anew every step. Call it first, before JAX starts;
  `one_malloc_arena()` says whether it applied.
- `use_compilation_cache()`: JAX's persistent compilation cache in a folder, so a second
  run, a resumed run, `evaluate` and `predict` load their compiled steps instead of
  compiling them again.
- `start_distributed(...)`: join a run of several processes (hosts) through
  `jax.distributed.initialize`; every process then sees the devices of all of them.
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp

ENV_DEVICES = "LSTM_JAX_CPU_DEVICES"  # the default device count
ENV_CACHE = "LSTM_JAX_COMPILATION_CACHE"  # the compilation cache's folder; "0": no cache
ENV_MALLOC = "LSTM_JAX_MALLOC"  # "default": `lstm-jax` leaves glibc malloc as it is
ENV_COORDINATOR = "LSTM_JAX_COORDINATOR"  # host:port of process 0's coordinator
ENV_NUM_PROCESSES = "LSTM_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "LSTM_JAX_PROCESS_ID"
HEARTBEAT_TIMEOUT_S = 30  # a process silent this long is dead, and the others stop
CACHE_MAX_BYTES = 2**30
CACHE_MIN_COMPILE_S = 0.2  # programs that compile faster are not worth a file


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


def configure(cpu_devices: int | None = None) -> int:
    """Split the CPU into `cpu_devices` JAX devices; returns the number in effect.

    `cpu_devices=None` takes `$LSTM_JAX_CPU_DEVICES` if set, else one per available core.
    If JAX has already started, the count cannot change: this warns when a different one
    was asked for, and returns the current one.
    """
    if cpu_devices is None and os.environ.get(ENV_DEVICES):
        text = os.environ[ENV_DEVICES]
        try:
            cpu_devices = int(text)
        except ValueError:
            raise ValueError(f"{ENV_DEVICES} must be a positive integer, got {text!r}") from None
    if cpu_devices is not None and (
        isinstance(cpu_devices, bool) or not isinstance(cpu_devices, int) or cpu_devices < 1
    ):
        raise ValueError(f"cpu_devices must be a positive integer, got {cpu_devices!r}")
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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt options
_one_arena = False  # set by tune_malloc(): a fact about the process, read by one_malloc_arena()


def tune_malloc() -> bool:
    """One glibc malloc arena, and its mmap and trim thresholds at their maximum, so that
    a step's large temporaries are reused from the heap; returns whether it applied
    (glibc only; elsewhere it does nothing).

    XLA's CPU runtime allocates a step's temporaries as one block per device and step
    (54 MB for the BiLSTM at T = 256, hundreds for long reviews) on its own threads, which
    glibc serves from per-thread arenas whose heaps hold at most 64 MB: larger blocks are
    mapped anew and page-faulted in on every step (a quarter to a half of the step's time
    on the 2-core VMs, `docs/cpu_hosts.md`). One arena is the main heap, which grows as
    needed and, with the thresholds raised, keeps its memory for the next step. The
    process then keeps its peak memory, and threads that allocate small objects at a high
    rate queue on the one arena's lock (the IMDB tokenizer's two threads took 3-4 times as
    long as on their own arenas, so the sentiment task tokenizes in a child process when
    `one_malloc_arena()`). Call it first, before JAX starts: a thread that has already
    allocated keeps its own arena.
    """
    global _one_arena
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if backends_started():
        warnings.warn(
            "JAX has already started: tune_malloc() cannot move its threads to one malloc "
            "arena now. Call lstm_jax.host.tune_malloc() first, before any JAX computation.",
            stacklevel=2,
        )
        return False
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    options = ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, 2**31 - 1), (_M_TRIM_THRESHOLD, 2**31 - 1))
    if not all(mallopt(option, value) == 1 for option, value in options):
        return False
    _one_arena = True
    return True


def one_malloc_arena() -> bool:
    """Whether `tune_malloc()` has put this process on one malloc arena."""
    return _one_arena


def start_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Join a multi-process run with `jax.distributed.initialize`; returns whether it did.

    The three values come from the arguments, else from `$LSTM_JAX_COORDINATOR`,
    `$LSTM_JAX_NUM_PROCESSES` and `$LSTM_JAX_PROCESS_ID` (the coordinator also from JAX's
    own `$JAX_COORDINATOR_ADDRESS`). `auto=True` with none of them lets JAX detect them
    (SLURM, Open MPI, Cloud TPU). Neither given nor `auto`: nothing happens (one process).
    If one process dies, JAX stops the others once it has missed its heartbeats for
    `heartbeat_timeout_s` seconds. Call before any JAX computation, on every process.
    """
    env = os.environ if env is None else env
    coordinator = coordinator or env.get(ENV_COORDINATOR) or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get(ENV_NUM_PROCESSES):
        num_processes = _env_int(env, ENV_NUM_PROCESSES, low=1)
    if process_id is None and env.get(ENV_PROCESS_ID):
        process_id = _env_int(env, ENV_PROCESS_ID, low=0)
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    if not any(v is not None for v in given.values()) and not auto:
        return False
    missing = [k for k, v in given.items() if v is None]
    if missing and not auto:
        raise ValueError(
            f"a multi-process run needs the coordinator, the number of processes and this "
            f"process's id; missing: {', '.join(missing)} (give --coordinator HOST:PORT "
            f"--num-processes N --process-id I, or ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES} "
            f"and ${ENV_PROCESS_ID}; or --distributed to let JAX detect them on SLURM, "
            "Open MPI or a Cloud TPU)"
        )
    if process_id is not None and (
        process_id < 0 or (num_processes is not None and process_id >= num_processes)
    ):
        raise ValueError(
            f"process id {process_id} is out of range for {num_processes} processes "
            "(ids run from 0 to the number of processes - 1)"
        )
    if backends_started():
        raise RuntimeError(
            "JAX has already started: call lstm_jax.host.start_distributed() before any "
            "JAX computation"
        )
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
        shutdown_timeout_seconds=heartbeat_timeout_s,
    )
    return True


def _env_int(env: Mapping[str, str], name: str, low: int) -> int:
    text = env[name]
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise ValueError(f"${name} must be an integer of at least {low}, got {text!r}")
    return value


def compilation_cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The compilation cache's folder for `env` (default: this process's environment):
    `$LSTM_JAX_COMPILATION_CACHE`, else `$XDG_CACHE_HOME/lstm_jax/xla`, else
    `~/.cache/lstm_jax/xla`; None when `$LSTM_JAX_COMPILATION_CACHE` is "0", or when
    neither it, `$XDG_CACHE_HOME` nor a home folder is known."""
    env = os.environ if env is None else env
    chosen = env.get(ENV_CACHE, "").strip()
    if chosen == "0":
        return None
    return Path(chosen).expanduser() if chosen else user_cache_dir("xla", env)


def user_cache_dir(name: str, env: Mapping[str, str] | None = None) -> Path | None:
    """`$XDG_CACHE_HOME/lstm_jax/<name>`, else `~/.cache/lstm_jax/<name>`; None when neither
    `$XDG_CACHE_HOME` nor a home folder is known."""
    env = os.environ if env is None else env
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "lstm_jax" / name
    try:
        return Path.home() / ".cache" / "lstm_jax" / name
    except RuntimeError:  # no $HOME and no user database entry
        return None


def use_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Keep compiled programs in `path` (default `compilation_cache_dir()`), capped at
    `CACHE_MAX_BYTES` (least recently used entries go first), and load them from there
    instead of compiling again. Returns the folder, or None when the cache is off.

    Call before the first compilation. A folder that cannot be made leaves the cache off
    with a warning. So does a machine whose XLA refuses the programs it cached itself
    (XLA's CPU loader rejects a program compiled with a CPU tuning flag the host does not
    list, jax-ml/jax#38445): the first use of a folder per machine and JAX version
    compiles a small program, loads it back from the disk, and records the verdict there.
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
    _cache_options(folder, min_compile_s=CACHE_MIN_COMPILE_S)
    problem = _round_trip_verdict(folder)
    if problem:
        _cache_options(None)
        warnings.warn(
            f"no compilation cache: this machine's XLA does not load the programs it "
            f"caches ({problem}); set ${ENV_CACHE}=0 to skip this check",
            stacklevel=2,
        )
        return None
    return folder


def _cache_options(
    folder: Path | None, min_compile_s: float | None = None, max_bytes: int | None = None
) -> None:
    """Point JAX's cache at `folder`, caching programs that compile in at least
    `min_compile_s`, the folder capped at `max_bytes` (-1: no cap); the defaults are
    `CACHE_MIN_COMPILE_S` and `CACHE_MAX_BYTES` as they are now, not at import."""
    from jax._src import compilation_cache

    if min_compile_s is None:
        min_compile_s = CACHE_MIN_COMPILE_S
    if max_bytes is None:
        max_bytes = CACHE_MAX_BYTES

    jax.config.update("jax_compilation_cache_dir", None if folder is None else str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_s)
    jax.config.update("jax_compilation_cache_max_size", max_bytes)
    compilation_cache.reset_cache()  # JAX decides at its next compilation whether to use it


def _round_trip(folder: Path) -> str | None:
    """Compile a small program into the cache, drop the in-memory caches, and run it again:
    None when the second run loaded it from the disk, else what went wrong."""
    hits: list[str] = []

    def listener(name: str, **_: object) -> None:
        if name.endswith("/cache_hits"):
            hits.append(name)

    _cache_options(folder, min_compile_s=0.0)
    jax.monitoring.register_event_listener(listener)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check = jax.jit(lambda x: jnp.tanh(x) * 2.0 + 0.5)
            first = check(jnp.arange(3.0))
            jax.clear_caches()  # the second call compiles again, so it reads the disk
            second = check(jnp.arange(3.0))
    finally:
        jax.monitoring.unregister_event_listener(listener)
        _cache_options(folder)
    if hits and bool((first == second).all()):
        return None
    said = [str(w.message) for w in caught]
    return (said[0] if said else "the program was compiled again, not loaded")[:300]


def _machine_id() -> str:
    """What the cached programs depend on besides JAX: the CPU's model and features."""
    text = platform.machine() + platform.processor()
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
        text += "".join(line for line in info if line.startswith(("model name", "flags")))
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _round_trip_verdict(folder: Path) -> str | None:
    """`_round_trip`'s verdict for this machine and JAX version, checked once and recorded
    in `folder` (an empty file when the round trip worked)."""
    import jaxlib

    record = folder / f"round-trip-{jax.__version__}-{jaxlib.__version__}-{_machine_id()}.txt"
    if record.exists():
        return record.read_text().strip() or None
    problem = _round_trip(folder)
    try:
        record.write_text(problem or "")
    except OSError:
        pass  # checked again next time
    return problem
