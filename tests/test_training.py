"""Training end to end on tiny data: steps, checkpoints, resume, refusals, prediction."""

import functools
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import data as data_lib
from lstm_jax import recurrence, training
from lstm_jax.cli import main
from lstm_jax.config import TrainConfig
from lstm_jax.predict import Predictor

CONFIG = TrainConfig(model="bilstm", vocab_size=300, batch_size=16, epochs=2, val_fraction=0.25)


@pytest.fixture(scope="module")
def finished_run(tiny_imdb, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    results = training.fit(CONFIG, workdir, archive=str(tiny_imdb), progress=False)
    return workdir, results


def _batch(config, seed=0):
    rng = np.random.default_rng(seed)
    tokens = [rng.integers(1, config.vocab_size, n).astype(np.int32) for n in (5, 9, 3, 12)]
    return next(data_lib.batches(tokens, np.array([0, 1, 1, 0]), batch_size=4, shuffle=False))


def test_train_step_changes_every_parameter():
    config = CONFIG.replace(model="stacked")
    trainer = training.Trainer(config)
    state = trainer.init_state()
    before = jax.tree.map(np.array, state.params)
    state, sums = trainer.train_step(state, _batch(config))
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, state.params)
    assert all(jax.tree.leaves(changed)), changed
    assert int(state.step) == 1 and float(sums["count"]) == 4.0


def test_data_parallel_step_matches_one_device():
    """Two devices, each with half the batch, take the same step as one device."""
    assert len(jax.devices()) == 2  # tests/conftest.py splits the CPU in two
    config = CONFIG.replace(model="stacked")
    batch = _batch(config)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        trainer = training.Trainer(config, devices=devices)
        assert trainer.mesh.size == len(devices)
        state, sums = trainer.train_step(trainer.init_state(), batch)
        results.append((state.params, sums, trainer.evaluate(state.params, [batch])))
    (p1, s1, e1), (p2, s2, e2) = results
    # Adam's first update is lr * g / (|g| + eps): where a gradient is near eps (one LSTM
    # bias element here: 5e-8, a sum of much larger terms that cancel) it magnifies the
    # rounding of the two summation orders. A wrong split or a missing psum changes the
    # gradient's sign in many elements, each moving by up to 2 lr.
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-2 * config.learning_rate)
    for key in s1:
        np.testing.assert_allclose(s1[key], s2[key], rtol=1e-6)
    assert e1 == pytest.approx(e2, rel=1e-5)


def test_data_mesh_uses_the_devices_that_split_the_batch_evenly():
    devices = jax.devices()
    assert training.data_mesh(64, devices).size == 2
    assert training.data_mesh(3, devices).size == 1
    assert training.data_mesh(64, devices[:1]).size == 1


def test_steps_compile_at_llvm_o1_on_cpu_only(monkeypatch):
    class Accelerator:
        platform = "gpu"

    o1 = {"xla_backend_optimization_level": 1}
    assert training.compiler_options(jax.devices()) == o1
    assert training.compiler_options([Accelerator()]) is None
    options, jit = [], jax.jit

    def spy(fun, **kwargs):
        options.append(kwargs.get("compiler_options"))
        return jit(fun, **kwargs)

    monkeypatch.setattr(jax, "jit", spy)
    training.Trainer(CONFIG)
    assert options == [o1, o1]  # the train step and the eval step


def test_train_step_compiles_once_per_shape():
    traces = []
    config = CONFIG

    def counted(state, batch):
        traces.append(batch.tokens.shape)
        return training.train_step(
            state,
            batch,
            model=training.make_model(config),
            optimizer=training.make_optimizer(config),
        )

    step = jax.jit(counted, donate_argnums=0)
    state = training.init_state(config, training.make_optimizer(config))
    rng = np.random.default_rng(0)
    tokens = [rng.integers(1, 50, n).astype(np.int32) for n in rng.integers(1, 300, 64)]
    labels = rng.integers(0, 2, 64)
    shapes = set()
    for epoch in range(2):
        for batch in data_lib.batches(tokens, labels, batch_size=8, shuffle=True, epoch=epoch):
            shapes.add(batch.tokens.shape)
            state, _ = step(state, batch)
    assert sorted(traces) == sorted(shapes)


def test_fit_writes_history_plot_results_and_checkpoints(finished_run):
    workdir, results = finished_run
    history = json.loads((workdir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert (workdir / "history.png").stat().st_size > 1000
    assert json.loads((workdir / "results.json").read_text()) == results
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert training.config_lib.load(workdir) == CONFIG
    assert (workdir / "tokenizer.json").is_file()


def test_same_seed_gives_same_metrics(finished_run, tiny_imdb, tmp_path):
    workdir, results = finished_run
    again = training.fit(CONFIG, tmp_path, archive=str(tiny_imdb), progress=False)
    assert again == results
    assert (tmp_path / "history.json").read_text().count("loss") == 4
    first = json.loads((workdir / "history.json").read_text())
    second = json.loads((tmp_path / "history.json").read_text())
    for a, b in zip(first, second, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }


def _final_state(workdir, config):
    manager = training._checkpoint_manager(workdir / "checkpoints", 2)
    template = {"state": training.Trainer(config).init_state(), "sums": training._zero_sums()}
    return training._restore(manager, template)["state"]


def test_interrupted_run_resumes_to_the_same_weights(finished_run, tiny_imdb, tmp_path):
    workdir, results = finished_run

    def interrupt_at(step, at):
        if step == at:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(training.Interrupted, match="--resume"):
        training.fit(
            CONFIG,
            tmp_path,
            archive=str(tiny_imdb),
            progress=False,
            on_step=functools.partial(interrupt_at, at=4),  # mid-way through epoch 2
        )
    assert _final_state(tmp_path, CONFIG).step == 4
    resumed = training.fit(CONFIG, tmp_path, archive=str(tiny_imdb), resume=True, progress=False)
    assert resumed == results
    expected, got = _final_state(workdir, CONFIG), _final_state(tmp_path, CONFIG)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)


def test_finished_run_is_not_overwritten_without_flag(finished_run, tiny_imdb):
    workdir, _ = finished_run
    with pytest.raises(training.RunError, match="--overwrite"):
        training.fit(CONFIG, workdir, archive=str(tiny_imdb), progress=False)


def test_resume_with_another_model_is_refused(finished_run, tiny_imdb, tmp_path):
    with pytest.raises(training.RunError, match="nothing to resume"):
        training.fit(CONFIG, tmp_path, archive=str(tiny_imdb), resume=True, progress=False)
    training.config_lib.TrainConfig.save(CONFIG, tmp_path)
    with pytest.raises(training.RunError, match="another config"):
        training.fit(
            CONFIG.replace(model="stacked"),
            tmp_path,
            archive=str(tiny_imdb),
            resume=True,
            progress=False,
        )


def test_workdir_without_checkpoint_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a training directory"):
        training.evaluate(tmp_path)
    CONFIG.save(tmp_path)
    with pytest.raises(training.RunError, match="no checkpoint"):
        training.load_params(tmp_path)


def test_predictions_ignore_padding(finished_run):
    predictor = Predictor(finished_run[0])
    text = "a great and wonderful film"
    n = predictor.predict(text).tokens
    bare = predictor.predict(text, width=n).probability
    padded = predictor.predict(text, width=n + 1000).probability
    assert 0.0 <= bare <= 1.0
    assert abs(bare - padded) < 1e-5


def test_predict_handles_odd_texts(finished_run):
    predictor = Predictor(finished_run[0])
    with pytest.raises(ValueError, match="empty"):
        predictor.predict("   ")
    odd = predictor.predict("caf\udcff \ufffd ünïcode ☃")  # replacement chars, non-ASCII
    assert 0.0 <= odd.probability <= 1.0
    long = predictor.predict(" ".join(["great"] * 50_000))
    assert long.tokens >= 1 and 0.0 <= long.probability <= 1.0


def test_cli_evaluate_and_predict(finished_run, tiny_imdb, capsys):
    workdir, results = finished_run
    assert main(["evaluate", "--workdir", str(workdir), "--imdb-archive", str(tiny_imdb)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["accuracy"] == pytest.approx(results["test_accuracy"])
    assert main(["predict", "--workdir", str(workdir), "--show-padding", "great film"]) == 0
    out = capsys.readouterr().out
    assert "without padding" in out and ("positive" in out or "negative" in out)


def test_cli_train_passes_the_matmul_dtype_to_the_config(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(training, "fit", lambda config, *a, **k: seen.update(c=config) or {})
    argv = ["train", "--workdir", str(tmp_path), "--quiet", "--matmul-dtype", "bfloat16"]
    assert main(argv) == 0
    assert seen["c"].matmul_dtype == "bfloat16"
    with pytest.raises(SystemExit):  # argparse: not a choice
        main([*argv[:-1], "float16"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_train_runs_on_the_engine_asked_for(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(
        training, "fit", lambda *a, **k: seen.append(recurrence.set_engine("scan")) or {}
    )
    argv = ["train", "--workdir", str(tmp_path), "--quiet"]
    assert main([*argv, "--engine", "pallas"]) == 0
    assert main(argv) == 0
    assert seen == ["pallas", "fused"]
    assert recurrence.set_engine("fused") == "fused"  # and the process default is back
    with pytest.raises(SystemExit):  # argparse: not a choice
        main([*argv, "--engine", "cudnn"])
    assert "invalid choice" in capsys.readouterr().err


def test_cli_reports_bad_archive_clearly(tmp_path, capsys):
    code = main(
        [
            "train",
            "--workdir",
            str(tmp_path / "run"),
            "--imdb-archive",
            str(tmp_path / "missing.tar.gz"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "aclImdb/{train,test}/{pos,neg}" in capsys.readouterr().err


def test_cosine_schedule_decays_to_zero():
    config = CONFIG.replace(schedule="cosine", epochs=2, clip_norm=0.0)
    optimizer = training.make_optimizer(config, steps_per_epoch=5)
    params = {"w": jnp.ones(3)}
    state = optimizer.init(params)
    sizes = []
    for _ in range(11):
        updates, state = optimizer.update({"w": jnp.ones(3)}, state, params)
        sizes.append(float(-updates["w"][0]))
    assert sizes[0] == pytest.approx(1e-3, rel=1e-4) and sizes == sorted(sizes, reverse=True)
    assert sizes[10] == 0.0  # after epochs * steps_per_epoch steps the rate is 0
    with pytest.raises(ValueError, match="schedule must be one of"):
        CONFIG.replace(schedule="linear")


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown config keys"):
        CONFIG.replace(learning_rat=0.1)
    with pytest.raises(ValueError, match="matmul_dtype must be one of"):
        CONFIG.replace(matmul_dtype="float16")


def test_bfloat16_matmuls_change_the_logits_slightly_and_no_parameter():
    config = CONFIG.replace(matmul_dtype="bfloat16")
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 50, (3, 12)), jnp.int32)
    lengths = jnp.array([12, 7, 1], jnp.int32)
    params = training.make_model(CONFIG).init(jax.random.key(0), tokens, lengths)
    own = training.make_model(config).init(jax.random.key(0), tokens, lengths)
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, params)
    low = training.make_model(config).apply(params, tokens, lengths)
    ref = training.make_model(CONFIG).apply(params, tokens, lengths)
    assert 0.0 < float(jnp.max(jnp.abs(low - ref))) < 1e-2 * float(jnp.max(jnp.abs(ref))) + 1e-4


def test_max_train_examples_takes_a_sample_of_both_classes(tiny_imdb, tmp_path):
    run = training.prepare_data(
        CONFIG.replace(max_train_examples=20), tmp_path, archive=str(tiny_imdb)
    )
    assert len(run.train.tokens) == 20
    assert 0 < run.train.labels.sum() < 20


def test_one_malloc_arena_prepares_the_same_data_in_a_child_process(
    tiny_imdb, tmp_path, monkeypatch
):
    here = training.prepare_data(CONFIG, tmp_path / "here", archive=str(tiny_imdb))
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    spawned = []
    real_run = training.subprocess.run
    monkeypatch.setattr(
        training.subprocess, "run", lambda *a, **k: spawned.append(k["env"]) or real_run(*a, **k)
    )
    child = training.prepare_data(CONFIG, tmp_path / "child", archive=str(tiny_imdb))
    assert len(spawned) == 1 and "GLIBC_TUNABLES" not in spawned[0]
    assert (tmp_path / "child" / training.TOKENIZER_FILE).is_file()
    assert child.tokenizer.encode("a great film").tolist() == (
        here.tokenizer.encode("a great film").tolist()
    )
    for mine, theirs in zip(child[1:], here[1:], strict=True):
        assert np.array_equal(mine.labels, theirs.labels)
        assert all(map(np.array_equal, mine.tokens, theirs.tokens))
    with pytest.raises(data_lib.DataError, match="missing"):  # the child's error, raised here
        training.prepare_data(CONFIG, tmp_path / "bad", archive=str(tmp_path / "missing"))


def test_a_start_that_fails_on_its_data_can_simply_be_retried(tiny_imdb, tmp_path):
    with pytest.raises(data_lib.DataError):
        training.fit(CONFIG, tmp_path, archive=str(tmp_path / "missing"), progress=False)
    assert not (tmp_path / "config.json").exists()
    results = training.fit(
        CONFIG.replace(epochs=1), tmp_path, archive=str(tiny_imdb), progress=False
    )
    assert 0.0 <= results["test_accuracy"] <= 1.0
