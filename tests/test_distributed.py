"""Several processes on the loopback interface (JAX's gloo CPU collectives) against one.

The subprocess runs are the slow tier; the option checks of `host.start_distributed` run
in the fast one (they fail before JAX starts anything).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from lstm_jax import host, train

WORKER = Path(__file__).with_name("distributed_worker.py")
DIED_WITHIN_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, out, *flags) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(workdir), str(out), *map(str, flags)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(procs: list[subprocess.Popen], timeout: float = 240) -> list[str]:
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return logs


def _two_processes(workdir, out, *flags, second=()) -> list[subprocess.Popen]:
    """Processes 0 and 1 of a run, with `flags`; process 1 also with `second`."""
    port = _free_port()
    common = ("--processes", 2, "--port", port, "--cpu-devices", 1, *flags)
    return [_start(workdir, out, "--process-id", i, *common, *extra)
            for i, extra in ((0, ()), (1, second))]  # fmt: skip


def _load(path):
    with np.load(path) as saved:
        leaves = [saved[f"arr_{i}"] for i in range(len(saved.files) - 2)]
        return saved["losses"], int(saved["step"]), leaves


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The toy task trained by one process on two devices."""
    root = tmp_path_factory.mktemp("one_process")
    _finish([_start(root / "run", root / "out.npz", "--cpu-devices", 2)])
    return _load(root / "out.npz")


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_process_with_two_devices(reference, tmp_path):
    logs = _finish(_two_processes(tmp_path / "run", tmp_path / "out.npz"))
    assert "process 1 of 2" in logs[1] and "process 0 of 2" in logs[0]
    losses, step, leaves = _load(tmp_path / "out.npz")
    ref_losses, ref_step, ref_leaves = reference
    assert step == ref_step == len(losses) == 18
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-6)
    for a, b in zip(leaves, ref_leaves, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert (tmp_path / "run" / "history.json").exists()


@pytest.mark.slow
def test_a_dead_process_stops_the_other_and_both_resume(reference, tmp_path):
    workdir = tmp_path / "run"
    procs = _two_processes(workdir, tmp_path / "out.npz", second=("--die-at", 9))
    survivor, victim = procs  # process 1 kills itself after step 9
    victim.communicate(timeout=240)
    died = time.monotonic()
    log = survivor.communicate(timeout=DIED_WITHIN_S)[0]
    assert time.monotonic() - died < DIED_WITHIN_S
    assert survivor.returncode != 0
    assert "Connection reset by peer" in log or "heartbeat" in log, log[-3000:]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["6"]  # epoch 1

    # Both again with --resume: the steps after the last checkpoint, to the same weights.
    shutil.copytree(workdir, tmp_path / "copy")
    _finish(_two_processes(workdir, tmp_path / "out.npz", "--resume"))
    losses, step, leaves = _load(tmp_path / "out.npz")
    ref_losses, ref_step, ref_leaves = reference
    assert step == ref_step and len(losses) == ref_step - 6
    np.testing.assert_allclose(losses, ref_losses[6:], rtol=1e-6)
    for a, b in zip(leaves, ref_leaves, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    # The same checkpoint resumes in one process on one device (parameters are replicated).
    _finish([_start(tmp_path / "copy", tmp_path / "one.npz", "--resume", "--cpu-devices", 1)])
    _, step, leaves = _load(tmp_path / "one.npz")
    assert step == ref_step
    for a, b in zip(leaves, ref_leaves, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_ctrl_c_on_one_process_stops_both_at_the_same_step(tmp_path):
    procs = _two_processes(tmp_path / "run", tmp_path / "out.npz", second=("--interrupt-at", 8))
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [130, 130], logs[0][-2000:]
    assert all("interrupted at step 8" in log for log in logs)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["6", "8"]


@pytest.mark.slow
def test_the_command_trains_a_task_over_two_processes(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 200)
    port = _free_port()
    command = [
        sys.executable, "-m", "lstm_jax.cli", "--cpu-devices", "1", "train",
        "--config", "charlm_quick", "--text", str(text), "--workdir", str(tmp_path / "run"),
        "--epochs", "1", "--hidden", "16", "--window", "16", "--batch-size", "8", "--quiet",
        "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--heartbeat-timeout", "10",
    ]  # fmt: skip
    procs = [
        subprocess.Popen([*command, "--process-id", str(i)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for i in (0, 1)
    ]  # fmt: skip
    logs = _finish(procs)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["epochs"] == 1 and np.isfinite(results["test_loss"])
    assert (tmp_path / "run" / "sample.txt").read_text().strip()  # process 0's report
    assert "process 1 of 2" in logs[1]


def test_a_batch_the_processes_cannot_split_evenly_is_a_clear_error():
    class Device(NamedTuple):  # what data_mesh reads of a device of another process
        process_index: int
        id: int

    devices = [Device(p, i) for p in range(3) for i in range(2)]
    with pytest.raises(ValueError, match="batch_size 64 does not split evenly over the 6"):
        train.data_mesh(64, devices)


def test_one_process_needs_no_options():
    assert host.start_distributed(env={}) is False


def test_a_partial_set_of_options_is_a_clear_error():
    with pytest.raises(ValueError, match="missing: num_processes, process_id"):
        host.start_distributed("127.0.0.1:1234", env={})
    with pytest.raises(ValueError, match="missing: coordinator"):
        host.start_distributed(env={host.ENV_NUM_PROCESSES: "2", host.ENV_PROCESS_ID: "0"})
    with pytest.raises(ValueError, match=r"LSTM_JAX_PROCESS_ID must be an integer"):
        host.start_distributed(env={host.ENV_PROCESS_ID: "one"})
    with pytest.raises(ValueError, match="process id 2 is out of range for 2 processes"):
        host.start_distributed("127.0.0.1:1234", 2, 2, env={})
    with pytest.raises(ValueError, match="process id -1 is out of range"):
        host.start_distributed("127.0.0.1:1234", 2, -1, env={})
