"""The training loop every task shares: `fit`, and `evaluate` / `load_params` of a run.

`fit` trains a task into a run directory (`lstm_jax.train.rundir`): it checkpoints every
epoch and when SIGINT or SIGTERM arrives (then raises `Interrupted`), keeps the
parameters with the best validation metric, writes the history, and finally evaluates the
best parameters on the test split, once. `resume=True` continues from the latest
checkpoint to the same final weights as an uninterrupted run: epoch `e`'s batches and
every dropout key depend only on the seed, `e` and the step.

Over several processes (`lstm_jax.host.start_distributed`) every process calls `fit` with
the same arguments and a `workdir` they all see: process 0 checks the directory, learns
the artefacts and writes the config, history, plots and results; all of them save and
restore the checkpoints together, and stop together when one of them is asked to.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from lstm_jax.train import checkpoints, history, rundir
from lstm_jax.train import step as step_lib
from lstm_jax.train.config import read_config_json
from lstm_jax.train.rundir import RESULTS_FILE, RunError
from lstm_jax.train.task import Task
from lstm_jax.train.trainer import Trainer

LOG_EVERY = 20  # steps between progress-bar updates (on one device the only host syncs)


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint at `step`."""

    def __init__(self, step: int, workdir: Path):
        super().__init__(
            f"interrupted at step {step}; checkpoint saved in {workdir}. "
            f"Continue with: lstm-jax train --workdir {workdir} --resume"
        )
        self.step = step
        self.workdir = workdir


class Diverged(RunError):
    """The training loss became NaN or infinite; the run stopped before it saved anything
    of that epoch."""


def _check_finite(loss: float, step: int, epoch: int, states: Any) -> None:
    """Raise `Diverged` when the epoch's running mean training `loss` is not finite: the
    parameters are then NaN or on their way there, and every later epoch, checkpoint and
    evaluation would be wasted. `states` is the run's checkpoint manager."""
    if math.isfinite(loss):
        return
    saved = states.latest_step()
    kept = "nothing was saved" if saved is None else f"its last checkpoint (step {saved}) is kept"
    raise Diverged(
        f"training diverged: the training loss is {loss} by step {step} (epoch {epoch + 1}); "
        f"{kept}. Lower the learning rate (--learning-rate) or look for NaN or extreme "
        "values in the training data, then start again (--overwrite)"
    )


@contextlib.contextmanager
def _stop_requests() -> Iterator[list[int]]:
    """Turn SIGINT and SIGTERM into a flag the loop polls between steps."""
    requested: list[int] = []
    handler = lambda signum, frame: requested.append(signum)  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _is_better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def fit(
    task: Task,
    workdir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> dict[str, Any]:
    """Train `task` into `workdir`, evaluate its best parameters on the test split, and
    return the results (`test_<metric>`, `best_epoch`, `epochs`).

    `on_step(step, sums)` is called after each train step with that step's metric sums
    (for tools and tests); `devices` (default: every process's) are the mesh the step is
    data-parallel over. Raises `Interrupted` after SIGINT or SIGTERM (a checkpoint saved),
    `Diverged` when the training loss turns NaN or infinite, and `RunError` when another
    process is training in `workdir` or the directory's run cannot be used as asked.
    """
    workdir = Path(workdir)
    primary = jax.process_index() == 0
    with rundir.claimed(workdir) if primary else contextlib.nullcontext():
        return _fit(task, workdir, resume, overwrite, progress, on_step, devices)


def _fit(
    task: Task,
    workdir: Path,
    resume: bool,
    overwrite: bool,
    progress: bool,
    on_step: Callable[[int, dict], None] | None,
    devices: Sequence[jax.Device] | None,
) -> dict[str, Any]:
    """`fit`'s work, in a directory this process holds (process 0 of several)."""
    config = task.config
    primary = jax.process_index() == 0
    if primary:
        rundir.check(workdir, config, task.artefacts, resume=resume, overwrite=overwrite)
    _together("checked")
    if resume and (workdir / RESULTS_FILE).exists():
        return json.loads((workdir / RESULTS_FILE).read_text())
    if primary:  # first, alone: it writes the artefacts the others read
        task.prepare(workdir)
    _together("prepared")
    if not primary:
        task.prepare(workdir)
    described = task.describe() if progress and primary else ""
    if described:
        print(described, flush=True)
    if not resume and primary:
        config.save(workdir)  # only now: a start that fails on its data leaves no run behind
    trainer = Trainer(task, task.num_batches("train"), devices)
    if jax.process_count() > 1:
        print(
            f"process {jax.process_index()} of {jax.process_count()}: "
            f"{jax.local_device_count()} of the mesh's {trainer.mesh.size} devices",
            flush=True,
        )
    state = trainer.init_state()
    states = checkpoints.state_manager(workdir, owner=True)
    best = checkpoints.best_manager(workdir, owner=True)
    metric, mode = task.selection
    records: list[dict[str, Any]] = []
    epoch_sums = None
    val_batches = task.batches("val")
    if resume and states.latest_step() is not None:
        state, epoch_sums = checkpoints.restore_state(states, state)
        records = history.read(workdir)
    step = int(state.step)
    with _stop_requests() as stop:
        for epoch in range(len(records), config.epochs):
            batches = task.batches("train", epoch)
            skip = step - epoch * len(batches)
            if skip == 0:
                epoch_sums = None
            started = time.perf_counter()
            with tqdm(
                total=len(batches),
                initial=skip,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                unit="batch",
                # None: tqdm leaves out the bar where stderr is not a terminal (a log file)
                disable=None if progress and primary else True,
            ) as bar:
                for i in range(skip, len(batches)):
                    state, sums = trainer.train_step(state, batches[i])
                    epoch_sums = step_lib.add(epoch_sums, sums)
                    step += 1
                    bar.update()
                    if on_step is not None:
                        on_step(step, sums)
                    if (i + 1) % LOG_EVERY == 0:
                        means = step_lib.means(epoch_sums)
                        _check_finite(means["loss"], step, epoch, states)
                        done = (i + 1 - skip) * config.batch_size
                        rate = done / (time.perf_counter() - started)
                        shown = {k: f"{v:.4f}" for k, v in means.items()}
                        bar.set_postfix(**shown, examples_per_s=f"{rate:.0f}")
                    if _anyone(stop):
                        checkpoints.save(states, step, {"state": state, "sums": epoch_sums})
                        raise Interrupted(step, workdir)
            seconds = time.perf_counter() - started
            train = task.report(step_lib.means(epoch_sums))
            _check_finite(train["loss"], step, epoch, states)
            val = trainer.evaluate(state.eval_params, val_batches)
            record = {
                "epoch": epoch + 1,
                "step": step,
                **{f"train_{k}": v for k, v in train.items()},
                **{f"val_{k}": v for k, v in val.items()},
                "seconds": seconds,
                **task.epoch_extras(batches),
            }
            checkpoints.save(states, step, {"state": state, "sums": epoch_sums})
            if _is_better(val[metric], _best_value(records, metric, mode), mode):
                checkpoints.save(best, step, state.eval_params)
            records.append(record)
            if primary:
                history.write(workdir, records)
            if progress and primary:
                print(history.format_record(record), flush=True)
    params = checkpoints.restore(best, state.eval_params)
    test = trainer.evaluate(params, task.batches("test"))
    results = {
        **{f"test_{k}": v for k, v in test.items()},
        "best_epoch": _best(records, metric, mode)["epoch"],
        "epochs": len(records),
    }
    if primary:  # over several processes its reports run on its devices, from a host copy
        local = params if jax.process_count() == 1 else jax.device_get(params)
        results.update(task.finish(workdir, local))
        (workdir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    _together("finished")
    return results


def _together(name: str) -> None:
    """Wait until every process is here (nothing to wait for in one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"lstm_jax.fit.{name}")


def _anyone(requested: list[int]) -> bool:
    """Whether any process was asked to stop (each process asks the others every step,
    so that all of them save the same step and stop there)."""
    if jax.process_count() == 1:
        return bool(requested)
    flags = multihost_utils.process_allgather(np.int32(bool(requested)))
    return bool(np.any(flags))


def _best(records: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The first record with the best validation `metric` (None before the first epoch)."""
    best = None
    for record in records:
        value = record[f"val_{metric}"]
        if _is_better(value, None if best is None else best[f"val_{metric}"], mode):
            best = record
    return best


def _best_value(records: list[dict[str, Any]], metric: str, mode: str) -> float | None:
    best = _best(records, metric, mode)
    return None if best is None else best[f"val_{metric}"]


def load_params(task: Task, workdir: str | Path) -> Any:
    """The best parameters saved in `workdir` (the latest checkpoint's if none is best)."""
    workdir = Path(workdir)
    read_config_json(workdir)  # a clear error where `workdir` holds no run
    template = jax.eval_shape(task.init_params, jax.random.key(task.config.seed))
    best = checkpoints.best_manager(workdir)
    if best.latest_step() is not None:
        return checkpoints.restore(best, template)
    states = checkpoints.state_manager(workdir)
    if states.latest_step() is None:
        raise RunError(
            f"{workdir} holds no checkpoint yet; train with `lstm-jax train --workdir {workdir}`"
        )
    state = jax.eval_shape(Trainer(task).init_state)
    return checkpoints.restore_state(states, state)[0].eval_params


def evaluate(task: Task, workdir: str | Path, params: Any = None) -> dict[str, float]:
    """Test metrics of the run in `workdir` (its best parameters), the task given with the
    run's config (`lstm_jax.tasks.load`). A caller that holds the parameters already
    (`load_params`, after `task.prepare(workdir, ("test",))`) passes them: nothing is
    prepared or restored again."""
    if params is None:
        read_config_json(workdir)  # a clear error where `workdir` holds no run
        task.prepare(Path(workdir), ("test",))
        params = load_params(task, workdir)
    return Trainer(task).evaluate(params, task.batches("test"))
