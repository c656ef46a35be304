"""Host settings: CPU devices, malloc, the compilation cache (tests/conftest.py already
split the CPU in two)."""

import jax
import pytest
from jax._src import compilation_cache

from lstm_jax import host


def test_configure_after_start_keeps_the_devices_and_says_why():
    jax.devices()
    assert host.configure() == 2
    with pytest.warns(UserWarning, match="before any JAX computation"):
        assert host.configure(cpu_devices=3) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_configure_rejects_a_device_count_that_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError, match="positive integer"):
        host.configure(cpu_devices=bad)


def test_device_count_from_the_environment_is_checked(monkeypatch):
    monkeypatch.setenv(host.ENV_DEVICES, "two")
    with pytest.raises(ValueError, match="LSTM_JAX_CPU_DEVICES must be a positive integer"):
        host.configure()
    monkeypatch.setenv(host.ENV_DEVICES, "2")
    assert host.configure() == 2


@pytest.mark.slow
def test_importing_the_package_changes_nothing_process_wide():
    import subprocess
    import sys

    script = (
        "import os, jax; config, env = dict(jax.config.values), dict(os.environ)\n"
        "import lstm_jax, lstm_jax.cli, lstm_jax.tasks, lstm_jax.configs\n"
        "print(sorted(k for k, v in jax.config.values.items() if config.get(k) != v),"
        " dict(os.environ) == env, lstm_jax.host.backends_started())"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] True False"


def test_compilation_cache_folder_follows_the_environment(monkeypatch):
    home_cache = host.compilation_cache_dir({})
    assert home_cache is not None and home_cache.parts[-3:] == (".cache", "lstm_jax", "xla")
    assert str(host.compilation_cache_dir({"XDG_CACHE_HOME": "/xdg"})) == "/xdg/lstm_jax/xla"
    chosen = {host.ENV_CACHE: "/mine", "XDG_CACHE_HOME": "/xdg"}
    assert str(host.compilation_cache_dir(chosen)) == "/mine"
    assert host.compilation_cache_dir({host.ENV_CACHE: "0"}) is None

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(host.Path, "home", staticmethod(no_home))
    assert host.compilation_cache_dir({}) is None  # no cache rather than a failed command


@pytest.fixture
def no_cache_after():
    """The cache off for the test (as a new process has it), the test run's own after it."""
    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_compilation_cache_max_size",
    )
    saved = {name: getattr(jax.config, name) for name in names}
    host._cache_options(None)
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def test_a_cache_folder_that_cannot_be_made_leaves_the_cache_off(tmp_path, no_cache_after):
    (tmp_path / "a_file").write_text("")
    with pytest.warns(UserWarning, match="LSTM_JAX_COMPILATION_CACHE"):
        assert host.use_compilation_cache(tmp_path / "a_file" / "xla") is None
    assert jax.config.jax_compilation_cache_dir is None


def test_the_cache_checks_itself_in_process_once_per_machine(tmp_path, no_cache_after):
    assert host.use_compilation_cache(tmp_path) == tmp_path
    assert jax.config.jax_compilation_cache_dir == str(tmp_path)
    (record,) = tmp_path.glob("round-trip-*.txt")
    assert record.read_text() == ""  # this machine's XLA loads what it cached


def test_a_machine_whose_xla_rejects_its_cached_programs_gets_no_cache(
    tmp_path, monkeypatch, no_cache_after
):
    said = "Target machine feature +prefer-no-gather is not supported on the host machine"
    monkeypatch.setattr(host, "_round_trip", lambda folder: said)
    with pytest.warns(UserWarning, match="prefer-no-gather"):
        assert host.use_compilation_cache(tmp_path) is None
    assert jax.config.jax_compilation_cache_dir is None

    def checked_again(folder):
        raise AssertionError("the verdict is recorded: no second check")

    monkeypatch.setattr(host, "_round_trip", checked_again)
    with pytest.warns(UserWarning, match="prefer-no-gather"):
        assert host.use_compilation_cache(tmp_path) is None


_COMPILE = """
import sys
import jax, jax.numpy as jnp
from lstm_jax import host, recurrence
from lstm_jax.cells import init_lstm
host.CACHE_MIN_COMPILE_S = 0.0  # cache even this small program
host.use_compilation_cache(sys.argv[1])
hits = []
jax.monitoring.register_event_listener(
    lambda name, **_: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None
)
params = init_lstm(jax.random.key(0), 3, 4)
xs = jax.random.normal(jax.random.key(1), (2, 5, 3))
loss = lambda p: jnp.sum(recurrence.rnn("lstm", p, xs, jnp.array([5, 2]))[0] ** 2)
grads = jax.jit(jax.grad(loss))(params)
print(len(hits), float(grads["kernel"].sum()))
"""


@pytest.mark.slow
def test_a_second_process_loads_the_compiled_program_from_the_cache(tmp_path):
    import subprocess
    import sys

    def run():
        return subprocess.run(
            [sys.executable, "-c", _COMPILE, str(tmp_path / "xla")],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip

    first_hits, first_sum = run()
    problem = "".join(r.read_text() for r in (tmp_path / "xla").glob("round-trip-*"))
    if problem:
        pytest.skip(f"this machine's XLA does not load the programs it caches: {problem}")
    second_hits, second_sum = run()
    assert int(first_hits) == 0 and int(second_hits) >= 1
    assert first_sum == second_sum


def test_tune_malloc_after_jax_started_changes_nothing_and_says_why():
    jax.devices()
    with pytest.warns(UserWarning, match="Call lstm_jax.host.tune_malloc\\(\\) first"):
        assert host.tune_malloc() is False


_FAULTS = """
import ctypes, resource, sys, threading
from lstm_jax import host
if sys.argv[1] == "tuned":
    assert host.tune_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size, faults = 100 * 2**20, []
def steps():  # as XLA's threads do: a large block per step, written, freed
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=steps)
thread.start()
thread.join()
print(min(faults[1:]))
"""


def _python(script, *args, env=None):
    """stdout of `script` run in a new Python process (glibc only: skipped elsewhere)."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("tune_malloc tunes glibc's malloc only")
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow
def test_tuned_malloc_reuses_a_threads_large_blocks_instead_of_faulting_them_in():
    def faults(mode):
        return int(_python(_FAULTS, mode))

    pages = 100 * 2**20 // 4096
    assert faults("default") > pages // 2  # importing lstm_jax tuned nothing: mapped anew
    assert faults("tuned") < pages // 20  # kept in the heap, reused


_ONE_ARENA = """
import os
from lstm_jax import host
before = host.one_malloc_arena()
assert host.tune_malloc()
print(before, host.one_malloc_arena(), os.environ.get("TOKENIZERS_PARALLELISM"))
"""


@pytest.mark.slow
def test_tuned_malloc_is_reported_and_leaves_the_environment_alone():
    import os

    environ = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    assert _python(_ONE_ARENA, env=environ) == "False True None"
