"""Host setup: CPU devices and malloc (tests/conftest.py already split the CPU in two)."""

import platform

import jax
import pytest

from lstm_jax import host


def test_conftest_made_two_cpu_devices():
    assert len(jax.devices("cpu")) == 2


def test_configure_after_start_keeps_the_devices_and_says_why():
    jax.devices()
    assert host.configure(malloc=False) == 2
    with pytest.warns(UserWarning, match="before any JAX computation"):
        assert host.configure(cpu_devices=3, malloc=False) == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_configure_rejects_a_device_count_that_is_not_a_positive_integer(bad):
    with pytest.raises(ValueError, match="positive integer"):
        host.configure(cpu_devices=bad)


def test_tune_malloc_applies_on_glibc():
    assert host.tune_malloc() == (
        platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    )


def test_available_cores_is_positive():
    assert host.available_cores() >= 1


def test_device_count_from_the_environment_is_checked(monkeypatch):
    monkeypatch.setenv(host.ENV_DEVICES, "two")
    with pytest.raises(ValueError, match="LSTM_JAX_CPU_DEVICES must be a positive integer"):
        host.configure(malloc=False)
    monkeypatch.setenv(host.ENV_DEVICES, "2")
    assert host.configure(malloc=False) == 2


@pytest.fixture
def thp_madvise(monkeypatch):
    monkeypatch.setattr(host, "_thp_on_request", lambda: True)


def test_tuned_environment_adds_its_tunable_once_and_keeps_the_others(thp_madvise):
    env = host.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.trim_threshold=1:glibc.malloc.arena_max=1"
    assert host.tuned_environment(env) == env
    assert host.one_arena(env)
    lean = host.tuned_environment({"PATH": "/bin"}, arena=False)
    assert lean == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert not host.one_arena(lean)
    mine = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}  # a user's own limit stays
    assert host.tuned_environment(mine) == mine and not host.one_arena(mine)


def test_huge_pages_only_where_the_kernel_gives_them_on_request(monkeypatch):
    monkeypatch.setattr(host, "_thp_on_request", lambda: False)
    assert host.tuned_environment({}, arena=False) == {}
    assert host.tuned_environment({})["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=1"


def test_default_arenas_takes_out_only_the_one_arena_limit():
    env = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1", "A": "b"}
    assert host.default_arenas(env) == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "A": "b"}
    assert host.default_arenas({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}) == {}
    assert host.default_arenas({"A": "b"}) == {"A": "b"}


def test_no_relaunch_when_opted_out_or_already_tuned(monkeypatch, thp_madvise):
    monkeypatch.setenv(host.ENV_TUNABLES, "0")
    assert not host.relaunch_pending(arena=True)
    host.relaunch_tuned("lstm_jax.cli", ["--help"], arena=True)  # returns: nothing to do
    monkeypatch.delenv(host.ENV_TUNABLES)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    assert not host.relaunch_pending(arena=False)
    assert host.relaunch_pending(arena=True) == (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    assert not host.relaunch_pending(arena=True)


def test_the_command_relaunches_train_with_one_arena_and_leaves_bench_alone(monkeypatch):
    from lstm_jax import cli

    calls = []
    monkeypatch.setattr(
        host, "relaunch_tuned", lambda module, argv, *, arena: calls.append((argv[0], arena))
    )
    monkeypatch.setattr(cli, "main", lambda argv: 0)
    for argv in (["train", "--workdir", "x"], ["bench", "--quick"], ["summary"]):
        monkeypatch.setattr("sys.argv", ["lstm-jax", *argv])
        with pytest.raises(SystemExit):
            cli.entry()
    assert calls == [("train", True), ("summary", False)]  # bench workers get their own


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


def test_a_cache_folder_that_cannot_be_made_leaves_the_cache_off(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.warns(UserWarning, match="LSTM_JAX_COMPILATION_CACHE"):
        assert host.use_compilation_cache(tmp_path / "a_file" / "xla") is None
    assert jax.config.jax_compilation_cache_dir is None  # this process: no cache


def test_a_machine_whose_xla_rejects_its_cached_programs_gets_no_cache(tmp_path, monkeypatch):
    stderr = (  # what XLA and JAX print there, the XLA line shortened
        "E1127 cpu_aot_loader.cc:195] Loading XLA:CPU AOT result. Target machine feature "
        "+prefer-no-gather is not supported on the host machine. Machine type used ...\n"
        "compiler.py:782: UserWarning: Error reading persistent compilation cache entry\n"
        "  warnings.warn(\n"
    )
    monkeypatch.setattr(
        host, "_ROUND_TRIP", f"import sys; sys.stderr.write({stderr!r}); sys.exit(3)"
    )
    with pytest.warns(UserWarning, match="prefer-no-gather"):
        assert host.use_compilation_cache(tmp_path) is None
    assert jax.config.jax_compilation_cache_dir is None

    def checked_again():
        raise AssertionError("the verdict is recorded: no second check")

    monkeypatch.setattr(host, "_cache_round_trip", checked_again)
    with pytest.warns(UserWarning, match="prefer-no-gather"):
        assert host.use_compilation_cache(tmp_path) is None


def test_a_check_that_could_not_run_is_not_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(host.sys, "executable", str(tmp_path / "no-python"))
    with pytest.warns(UserWarning, match="could not run"):
        assert host.use_compilation_cache(tmp_path / "xla") is None
    assert not list((tmp_path / "xla").iterdir())  # checked again next time


_COMPILE_TWICE = """
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


def test_a_second_process_loads_the_compiled_program_from_the_cache(tmp_path):
    import subprocess
    import sys

    def run():
        return subprocess.run(
            [sys.executable, "-c", _COMPILE_TWICE, str(tmp_path / "xla")],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip

    first_hits, first_sum = run()
    # The first run's round-trip check (XLA's own loader, none of this project's code).
    problem = "".join(record.read_text() for record in (tmp_path / "xla").glob("round-trip-*"))
    if problem:
        pytest.skip(f"this machine's XLA does not load the programs it caches: {problem}")
    second_hits, second_sum = run()
    assert int(first_hits) == 0 and int(second_hits) >= 1
    assert first_sum == second_sum
    assert any((tmp_path / "xla").iterdir())


def test_every_command_but_bench_uses_the_compilation_cache(monkeypatch):
    from lstm_jax import cli

    used = []
    monkeypatch.setattr(host, "configure", lambda cpu_devices=None: 2)
    monkeypatch.setattr(host, "use_compilation_cache", lambda: used.append(True))
    monkeypatch.setattr(cli, "_summary", lambda args: 0)
    monkeypatch.setattr(cli, "_bench", lambda args: 0)
    assert cli.main(["bench", "--quick"]) == 0
    assert not used
    assert cli.main(["summary"]) == 0
    assert used == [True]
