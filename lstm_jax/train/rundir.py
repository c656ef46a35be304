"""The rules of a run directory: what it holds, when it may be written, resumed or replaced.

    workdir/config.json          the config, with its task's name (`lstm_jax.train.config`)
    workdir/<artefacts>          what the task learnt from its training data (a tokenizer)
    workdir/checkpoints/, best/  Orbax checkpoints (`lstm_jax.train.checkpoints`)
    workdir/history.json, .png   per-epoch metrics (`lstm_jax.train.history`)
    workdir/results.json         test metrics; its presence marks a finished run
    workdir/.lock                held by the process training in it (`claimed`)

A directory holding a run is never overwritten without `overwrite`; a resumed run must
ask for the saved config (but its `RUNTIME_FIELDS`, such as the engine); one process
at a time trains in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from lstm_jax.train import checkpoints, history
from lstm_jax.train.config import CONFIG_FILE, TrainConfig, read_config_json

RESULTS_FILE = "results.json"
LOCK_FILE = ".lock"


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (finished, foreign or missing)."""


@contextlib.contextmanager
def claimed(workdir: Path) -> Iterator[None]:
    """`workdir`, made if it is new, held by this process alone while the body runs.

    A second training process on the same directory (a job started twice) gets a
    `RunError` instead of writing its checkpoints over the first one's. The hold is an
    `flock` on `LOCK_FILE`, which ends with the process however it ends, so a killed run
    leaves nothing to clean up; where the file system has no locks, runs go unguarded.
    """
    if workdir.exists() and not workdir.is_dir():
        raise RunError(f"{workdir} is a file; give a directory for the run")
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / LOCK_FILE, "a") as lock:  # closing it releases the lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(
                f"another process is training in {workdir}; wait for it to end or stop it "
                "(then --resume continues its run), or choose another --workdir"
            ) from None
        except OSError:  # no locks on this file system (ENOLCK, EOPNOTSUPP)
            pass
        yield


def clear(workdir: Path, artefacts: Iterable[str]) -> None:
    """Remove a run's files from `workdir` (and nothing else that may be there)."""
    for name in (checkpoints.STATE_DIR, checkpoints.BEST_DIR):
        shutil.rmtree(workdir / name, ignore_errors=True)
    files = (CONFIG_FILE, RESULTS_FILE, history.HISTORY_FILE, history.PLOT_FILE, *artefacts)
    for name in files:
        (workdir / name).unlink(missing_ok=True)


def check(
    workdir: Path,
    config: TrainConfig,
    artefacts: Iterable[str],
    *,
    resume: bool,
    overwrite: bool,
) -> None:
    """Refuse to clobber a run, or to resume one with another config."""
    has_run = (workdir / CONFIG_FILE).exists()
    if overwrite and has_run:
        clear(workdir, artefacts)
        return
    if not has_run:
        if resume:
            raise RunError(f"nothing to resume: {workdir} holds no training run")
        for name in artefacts:  # left by a start that failed before its config was saved
            (workdir / name).unlink(missing_ok=True)
        return
    saved = read_config_json(workdir)
    if (workdir / RESULTS_FILE).exists() and not resume:
        raise RunError(
            f"{workdir} holds a finished run; pass --overwrite to replace it "
            "or choose another --workdir"
        )
    if not resume:
        raise RunError(
            f"{workdir} already holds a run; pass --resume to continue it "
            "or --overwrite to start over"
        )
    asked = config.to_dict()
    differ = {
        name: (saved.get(name), value)
        for name, value in asked.items()
        if name not in config.RUNTIME_FIELDS and saved.get(name) != value
    }
    differ.update({name: (saved[name], None) for name in saved.keys() - asked.keys()})
    if differ:
        shown = ", ".join(f"{k}: saved {s!r}, asked {a!r}" for k, (s, a) in differ.items())
        raise RunError(
            f"{workdir} was trained with another config ({shown}); resume with "
            "`--resume` alone (the saved config) or use another --workdir"
        )
