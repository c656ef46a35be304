"""The shared trainer on a toy task: steps, data parallelism, checkpoints, exact resume,
the best parameters, a run directory's rules, the optimizer and the config's checks."""

import fcntl
import functools
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_task import ToyConfig, ToyTask

from lstm_jax import train
from lstm_jax.train import checkpoints, history, rundir
from lstm_jax.train.config import ConfigError, read_config_json

CONFIG = ToyConfig(learning_rate=1e-2)


def _fit(workdir, config=CONFIG, **kwargs):
    return train.fit(ToyTask(config), workdir, progress=False, **kwargs)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    return workdir, _fit(workdir)


def _prepared(config=CONFIG, tmp_path=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    task = ToyTask(config)
    task.prepare(tmp_path)
    return task


def _leaves_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_train_step_changes_every_parameter(tmp_path):
    task = _prepared(tmp_path=tmp_path)
    trainer = train.Trainer(task)
    state = trainer.init_state()
    before = jax.tree.map(np.array, state.params)
    state, sums = trainer.train_step(state, task.batches("train")[0])
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, state.params)
    assert all(jax.tree.leaves(changed)), changed
    assert int(state.step) == 1 and float(sums["count"]) == CONFIG.batch_size


def test_the_state_starts_from_the_tasks_own_initial_parameters(tmp_path):
    """init_state jits init_params: the values are those of calling it."""
    task = _prepared(tmp_path=tmp_path)
    state = train.Trainer(task).init_state()
    _leaves_equal(state.params, task.init_params(jax.random.key(CONFIG.seed)))
    assert int(state.step) == 0


def test_data_parallel_step_matches_one_device(tmp_path):
    """Two devices, each with half the batch, take the same step as one device."""
    assert len(jax.devices()) == 2  # tests/conftest.py splits the CPU in two
    task = _prepared(tmp_path=tmp_path)
    batch = task.batches("train")[0]
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        trainer = train.Trainer(task, devices=devices)
        assert trainer.mesh.size == len(devices)
        state, sums = trainer.train_step(trainer.init_state(), batch)
        results.append((state.params, sums, trainer.evaluate(state.params, [batch])))
    (p1, s1, e1), (p2, s2, e2) = results
    # Adam's first update is lr * g / (|g| + eps): where a gradient is near eps it magnifies
    # the rounding of the two summation orders. A wrong split or a missing psum changes the
    # gradient's sign in many elements, each moving by up to 2 lr.
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-2 * CONFIG.learning_rate)
    for key in s1:
        np.testing.assert_allclose(s1[key], s2[key], rtol=1e-6)
    assert e1 == pytest.approx(e2, rel=1e-5)


def test_data_mesh_uses_the_devices_that_split_the_batch_evenly():
    devices = jax.devices()
    assert train.data_mesh(64, devices).size == 2
    assert train.data_mesh(3, devices).size == 1
    assert train.data_mesh(64, devices[:1]).size == 1


def test_steps_compile_at_llvm_o1_on_cpu_only(tmp_path, monkeypatch):
    from lstm_jax.train import trainer as trainer_lib

    class Accelerator:
        platform = "gpu"

    o1 = {"xla_backend_optimization_level": 1}
    assert trainer_lib.compiler_options(jax.devices()) == o1
    assert trainer_lib.compiler_options([Accelerator()]) is None
    options, jit = [], jax.jit

    def spy(fun, **kwargs):
        options.append(kwargs.get("compiler_options"))
        return jit(fun, **kwargs)

    monkeypatch.setattr(jax, "jit", spy)
    train.Trainer(ToyTask(CONFIG))
    assert options == [o1, o1]  # the train step and the eval step


def test_fit_writes_history_plot_results_checkpoints_and_config(finished_run):
    workdir, results = finished_run
    records = json.loads((workdir / history.HISTORY_FILE).read_text())
    assert [h["epoch"] for h in records] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"} <= set(
        records[0]
    )
    assert (workdir / history.PLOT_FILE).stat().st_size > 1000
    assert json.loads((workdir / "results.json").read_text()) == results
    assert set(results) == {"test_loss", "test_accuracy", "best_epoch", "epochs"}
    assert read_config_json(workdir) == CONFIG.to_dict() and CONFIG.to_dict()["task"] == "toy"
    assert (workdir / "toy_scale.txt").is_file()
    assert checkpoints.state_manager(workdir).latest_step() == records[-1]["step"]


def test_the_best_validation_epoch_is_kept_and_tested(finished_run):
    workdir, results = finished_run
    records = history.read(workdir)
    best = max(records, key=lambda r: r["val_accuracy"])
    assert results["best_epoch"] == best["epoch"]
    assert checkpoints.best_manager(workdir).latest_step() == best["step"]
    task = ToyTask(CONFIG)
    assert train.evaluate(task, workdir) == pytest.approx(
        {"loss": results["test_loss"], "accuracy": results["test_accuracy"]}
    )
    assert task.prepared == [("test",)]  # evaluation reads the test split only
    params = train.load_params(task, workdir)
    assert train.evaluate(task, workdir, params) == pytest.approx(
        {"loss": results["test_loss"], "accuracy": results["test_accuracy"]}
    )
    assert task.prepared == [("test",)]  # given the parameters, it prepares nothing again


def test_same_seed_gives_same_metrics(finished_run, tmp_path):
    workdir, results = finished_run
    assert _fit(tmp_path) == results
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(history.read(workdir)) == strip(history.read(tmp_path))


def _final_state(workdir):
    state = jax.eval_shape(train.Trainer(ToyTask(CONFIG)).init_state)
    return checkpoints.restore_state(checkpoints.state_manager(workdir), state)[0]


def _interrupt_at(step, sums, at):
    if step == at:
        os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_run_resumes_to_the_same_weights(finished_run, tmp_path):
    workdir, results = finished_run
    with pytest.raises(train.Interrupted, match="--resume"):
        _fit(tmp_path, on_step=functools.partial(_interrupt_at, at=9))  # mid-way, epoch 2
    assert _final_state(tmp_path).step == 9
    assert _fit(tmp_path, resume=True) == results
    _leaves_equal(_final_state(workdir), _final_state(tmp_path))
    assert history.read(tmp_path) != [] and len(history.read(tmp_path)) == 2


def test_a_resumed_run_removes_what_a_killed_save_left_and_a_reader_does_not(
    finished_run, tmp_path
):
    _, results = finished_run
    with pytest.raises(train.Interrupted):
        _fit(tmp_path, on_step=functools.partial(_interrupt_at, at=9))
    # What Orbax leaves of a save whose process was killed half-way through it.
    left = [
        tmp_path / part / "12.orbax-checkpoint-tmp-1733000000" for part in ("checkpoints", "best")
    ]
    for folder in left:
        folder.mkdir()
        (folder / "part").write_bytes(b"half a save")
    train.load_params(ToyTask(CONFIG), tmp_path)  # a reader: it may be a running save's
    assert all(folder.exists() for folder in left)
    assert _fit(tmp_path, resume=True) == results
    assert not any(folder.exists() for folder in left)


def test_a_run_stopped_in_its_first_epoch_still_has_parameters(tmp_path):
    with pytest.raises(train.Interrupted):
        _fit(tmp_path, on_step=functools.partial(_interrupt_at, at=2))
    assert checkpoints.best_manager(tmp_path).latest_step() is None
    params = train.load_params(ToyTask(CONFIG), tmp_path)
    _leaves_equal(params, _final_state(tmp_path).params)


class _PoisonedToy(ToyTask):
    """The toy task with a NaN in one training example of its third batch from epoch
    `poisoned_from` (0-based) on: bad data, or a learning rate that blew up."""

    def __init__(self, config, poisoned_from):
        super().__init__(config)
        self.poisoned_from = poisoned_from

    def batches(self, split, epoch=0):
        out = super().batches(split, epoch)
        if split == "train" and epoch >= self.poisoned_from:
            xs = out[2].xs.copy()
            xs[0, 0, 0] = np.nan
            out[2] = out[2]._replace(xs=xs)
        return out


@pytest.mark.parametrize(
    ("poisoned_from", "log_every", "message"),
    [
        (0, 20, r"nan by step 6 \(epoch 1\); nothing was saved"),  # at the epoch's end
        (0, 2, r"nan by step 4 \(epoch 1\); nothing was saved"),  # at a progress update
        (1, 20, r"nan by step 12 \(epoch 2\); its last checkpoint \(step 6\) is kept"),
    ],
)
def test_a_loss_gone_nan_stops_the_run_before_it_saves_anything_of_the_epoch(
    tmp_path, monkeypatch, poisoned_from, log_every, message
):
    monkeypatch.setattr(train.loop, "LOG_EVERY", log_every)
    with pytest.raises(train.Diverged, match=f"training diverged: the training loss is {message}"):
        train.fit(_PoisonedToy(CONFIG, poisoned_from), tmp_path, progress=False)
    saved = checkpoints.state_manager(tmp_path).latest_step()
    assert saved == (6 if poisoned_from else None)
    assert len(history.read(tmp_path)) == poisoned_from


def test_a_second_process_training_in_the_same_directory_is_refused(finished_run, tmp_path):
    holder = os.open(tmp_path / rundir.LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # as a training process holds it
    try:
        with pytest.raises(train.RunError, match="another process is training in"):
            _fit(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [rundir.LOCK_FILE]
    finally:
        os.close(holder)
    assert _fit(tmp_path) == finished_run[1]  # the holder gone, the run goes ahead


def test_output_to_a_file_gets_the_epochs_and_no_progress_bar(tmp_path, capsys):
    train.fit(ToyTask(CONFIG), tmp_path, progress=True)  # capsys: neither is a terminal
    out, err = capsys.readouterr()
    assert "epoch 2: train loss" in out
    assert "batch" not in err, err[:200]


def test_resume_may_change_the_engine_but_nothing_else(tmp_path):
    with pytest.raises(train.Interrupted):
        _fit(tmp_path, on_step=functools.partial(_interrupt_at, at=3))
    with pytest.raises(train.RunError, match=r"hidden: saved 4, asked 5.*--resume. alone"):
        _fit(tmp_path, CONFIG.replace(hidden=5), resume=True)
    results = _fit(tmp_path, CONFIG.replace(engine="scan"), resume=True)
    assert results["epochs"] == CONFIG.epochs


def test_a_finished_run_is_not_overwritten_without_the_flag(finished_run, tmp_path):
    workdir, _ = finished_run
    with pytest.raises(train.RunError, match="--overwrite"):
        _fit(workdir)
    _fit(tmp_path, CONFIG.replace(epochs=1))
    (tmp_path / "notes.txt").write_text("mine")
    results = _fit(tmp_path, overwrite=True)
    assert results["epochs"] == 2 and (tmp_path / "notes.txt").read_text() == "mine"


def test_a_started_run_needs_resume_or_overwrite(tmp_path):
    with pytest.raises(train.Interrupted):
        _fit(tmp_path, on_step=functools.partial(_interrupt_at, at=1))
    with pytest.raises(train.RunError, match="--resume to continue"):
        _fit(tmp_path)


def test_nothing_to_resume_and_no_checkpoint_say_so(tmp_path):
    with pytest.raises(train.RunError, match="nothing to resume"):
        _fit(tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match="not a training directory"):
        train.evaluate(ToyTask(CONFIG), tmp_path)
    CONFIG.save(tmp_path)
    with pytest.raises(train.RunError, match="no checkpoint"):
        train.load_params(ToyTask(CONFIG), tmp_path)


def _updates(optimizer, grads_sequence):
    params = {"w": jnp.ones(3)}
    state, out = optimizer.init(params), []
    for grads in grads_sequence:
        updates, state = optimizer.update({"w": grads}, state, params)
        out.append(np.asarray(updates["w"]))
    return out


def test_the_weight_average_is_what_is_evaluated_kept_and_resumed(tmp_path):
    config = CONFIG.replace(ema_decay=0.5)
    task = _prepared(config, tmp_path)
    trainer = train.Trainer(task)
    state = trainer.init_state()
    before = jax.tree.map(np.array, state.params)
    state, _ = trainer.train_step(state, task.batches("train")[0])
    d = min(0.5, 1 / 10)  # the warm-up at step 0: (1 + 0) / (10 + 0)
    for e, p0, p1 in zip(*map(jax.tree.leaves, (state.ema, before, state.params)), strict=True):
        np.testing.assert_allclose(e, d * p0 + (1 - d) * p1, rtol=1e-6, atol=1e-7)
    _fit(tmp_path / "run", config.replace(epochs=1))  # its one epoch is the best
    best = checkpoints.restore(checkpoints.best_manager(tmp_path / "run"), state.params)
    final = _final_state_of(tmp_path / "run", config.replace(epochs=1))
    _leaves_equal(best, final.ema)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(*map(jax.tree.leaves, (best, final.params)), strict=True)
    )


def _final_state_of(workdir, config):
    state = jax.eval_shape(train.Trainer(ToyTask(config)).init_state)
    return checkpoints.restore_state(checkpoints.state_manager(workdir), state)[0]


def test_learning_rate_and_cosine_schedule_reach_the_optimizer():
    config = CONFIG.replace(schedule="cosine", epochs=2, clip_norm=0.0, learning_rate=3e-3)
    sizes = [-u[0] for u in _updates(train.make_optimizer(config, 5), [jnp.ones(3)] * 11)]
    assert sizes[0] == pytest.approx(3e-3, rel=1e-4) and sizes == sorted(sizes, reverse=True)
    assert sizes[10] == 0.0  # after epochs * steps_per_epoch steps the rate is 0
    constant = CONFIG.replace(clip_norm=0.0, learning_rate=3e-3)
    sizes = [-u[0] for u in _updates(train.make_optimizer(constant, 5), [jnp.ones(3)] * 11)]
    assert sizes[10] == pytest.approx(3e-3, rel=1e-4)


def test_wsd_holds_the_rate_then_decays_linearly_to_zero():
    config = CONFIG.replace(
        schedule="wsd", decay_fraction=0.4, epochs=2, clip_norm=0.0, learning_rate=3e-3
    )
    sizes = [-u[0] / 3e-3 for u in _updates(train.make_optimizer(config, 5), [jnp.ones(3)] * 11)]
    # 10 steps, the last 4 decaying: held through step 6, then 0.75, 0.5, 0.25, 0
    np.testing.assert_allclose(sizes, [1.0] * 7 + [0.75, 0.5, 0.25, 0.0], atol=1e-4)
    warm = config.replace(warmup_epochs=0.4)  # 2 steps up, then 3 of the other 8 decaying
    sizes = [-u[0] / 3e-3 for u in _updates(train.make_optimizer(warm, 5), [jnp.ones(3)] * 11)]
    np.testing.assert_allclose(sizes, [0, 0.5] + [1.0] * 6 + [2 / 3, 1 / 3, 0], atol=1e-4)


def test_clip_norm_reaches_the_optimizer():
    unit = jnp.array([0.6, 0.8, 0.0])
    clipped = train.make_optimizer(CONFIG.replace(clip_norm=1.0))
    unclipped = train.make_optimizer(CONFIG.replace(clip_norm=0.0))
    huge_first = [1000.0 * unit, unit]
    np.testing.assert_allclose(
        _updates(clipped, huge_first)[1], _updates(clipped, [unit, unit])[1], rtol=1e-6
    )
    assert not np.allclose(_updates(unclipped, huge_first)[1], _updates(unclipped, [unit, unit])[1])


def test_weight_decay_shrinks_the_matrices_and_leaves_the_biases():
    config = CONFIG.replace(clip_norm=0.0, learning_rate=0.1, weight_decay=0.5)
    optimizer = train.make_optimizer(config)
    params = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zero, optimizer.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(updates["bias"], 0.0)


def test_config_names_what_is_wrong():
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['learning_rat'\]"):
        CONFIG.replace(learning_rat=0.1)
    with pytest.raises(ConfigError, match="schedule must be one of"):
        CONFIG.replace(schedule="linear")
    with pytest.raises(ConfigError, match="learning_rate must be a finite number"):
        CONFIG.replace(learning_rate=float("nan"))
    with pytest.raises(ConfigError, match=r"learning_rate must lie in \(0, inf\)"):
        CONFIG.replace(learning_rate=0.0)
    with pytest.raises(ConfigError, match="epochs must be int"):
        CONFIG.replace(epochs=2.5)
    with pytest.raises(ConfigError, match="engine must be one of"):
        CONFIG.replace(engine="cudnn")
    with pytest.raises(ConfigError, match="is a 'sentiment' config, not a 'toy' one"):
        ToyConfig.from_dict({"task": "sentiment"})
    assert type(CONFIG.replace(learning_rate=1).learning_rate) is float  # an int given


def test_a_damaged_or_foreign_config_file_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ConfigError, match=r"config.json is not valid JSON"):
        read_config_json(tmp_path)
    (tmp_path / "config.json").write_text('{"model": "x"}')
    with pytest.raises(ConfigError, match=r"config.json is not an lstm_jax config"):
        read_config_json(tmp_path)
    with pytest.raises(ConfigError, match=r"config\.json"):
        _fit(tmp_path, resume=True)
