"""IMDB sentiment on the trainer, on a toy IMDB: one tiny end-to-end fit, predictions,
compiled shapes, and every config field reaching what it controls."""

import dataclasses
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from lstm_jax import train
from lstm_jax.tasks.sentiment import Predictor, SentimentConfig, SentimentTask
from lstm_jax.tasks.sentiment import data as data_lib
from lstm_jax.tasks.sentiment.task import Encoded
from lstm_jax.train import TrainConfig
from lstm_jax.train.config import ConfigError

CONFIG = SentimentConfig(
    vocab_size=300, batch_size=16, epochs=2, val_fraction=0.25, learning_rate=1e-2
)


@pytest.fixture(scope="module")
def finished_run(tiny_imdb, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    results = train.fit(SentimentTask(CONFIG, data=tiny_imdb), workdir, progress=False)
    return workdir, results


def _prepared(config, tiny_imdb, tmp_path):
    task = SentimentTask(config, data=tiny_imdb)
    task.prepare(tmp_path)
    return task


def test_a_tiny_fit_learns_the_toy_reviews(finished_run):
    workdir, results = finished_run
    assert results["epochs"] == 2 and results["test_accuracy"] > 0.7
    records = train.history.read(workdir)
    assert 0.0 < records[0]["padding_fraction"] < 1.0
    assert (workdir / "tokenizer.json").is_file()


def test_predictions_ignore_padding(finished_run):
    predictor = Predictor(finished_run[0])
    text = "a great and wonderful film"
    n = predictor.predict(text).tokens
    bare = predictor.predict(text, width=n).probability
    padded = predictor.predict(text, width=n + 1000).probability
    assert bare > 0.5  # the toy data's positive words
    assert abs(bare - padded) < 1e-5


def test_predict_handles_odd_texts(finished_run):
    predictor = Predictor(finished_run[0])
    with pytest.raises(ValueError, match="empty"):
        predictor.predict("   ")
    with pytest.raises(TypeError, match="must be str"):
        predictor.predict(b"great")
    odd = predictor.predict("caf\udcff \ufffd ünïcode ☃")  # replacement chars, non-ASCII
    assert odd.tokens > 0
    text = " ".join(["great"] * 50_000)  # a quarter of a million subwords, one batch row
    long = predictor.predict(text)
    assert long.tokens == len(predictor.encode(text)) > 50_000 and np.isfinite(long.probability)


def test_evaluate_rebuilds_the_run_from_its_directory(finished_run, tiny_imdb):
    from lstm_jax import tasks

    workdir, results = finished_run
    again = train.evaluate(tasks.load(workdir, tiny_imdb), workdir)
    assert again["accuracy"] == pytest.approx(results["test_accuracy"])


def test_train_step_compiles_once_per_shape(tiny_imdb, tmp_path):
    task = _prepared(CONFIG.replace(batch_size=8), tiny_imdb, tmp_path)
    rng = np.random.default_rng(0)  # reviews of 1 to 150 subwords: three buckets
    tokens = [rng.integers(1, 50, n).astype(np.int32) for n in rng.integers(1, 150, 48)]
    task.splits["train"] = Encoded(tokens, rng.integers(0, 2, 48).astype(np.int32))
    trainer = train.Trainer(task)
    state = trainer.init_state()
    shapes = set()
    for epoch in range(2):
        for batch in task.batches("train", epoch):
            shapes.add(batch.tokens.shape)
            state, _ = trainer.train_step(state, batch)
    assert len(shapes) > 1
    assert trainer.jitted_train_step._cache_size() == len(shapes)
    assert task.num_batches("train") == len(task.batches("train", 0))


def test_a_stacked_train_step_changes_every_parameter(tiny_imdb, tmp_path):
    task = _prepared(CONFIG.replace(model="stacked"), tiny_imdb, tmp_path)
    trainer = train.Trainer(task)
    state = trainer.init_state()
    before = jax.tree.map(np.array, state.params)
    state, _ = trainer.train_step(state, task.batches("train")[0])
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), before, state.params)
    assert all(jax.tree.leaves(changed)), changed


def test_a_start_that_fails_on_its_data_can_simply_be_retried(tiny_imdb, tmp_path):
    with pytest.raises(data_lib.DataError):
        train.fit(SentimentTask(CONFIG, data=tmp_path / "missing"), tmp_path, progress=False)
    assert not (tmp_path / "config.json").exists()
    results = train.fit(
        SentimentTask(CONFIG.replace(epochs=1), data=tiny_imdb), tmp_path, progress=False
    )
    assert results["epochs"] == 1


@pytest.mark.slow
def test_on_one_malloc_arena_a_child_process_prepares_the_same_splits(
    tiny_imdb, tmp_path, monkeypatch, capfd
):
    from lstm_jax import host
    from lstm_jax.tasks.errors import ChildTraceback, written_for_users
    from lstm_jax.tasks.sentiment import task as task_lib

    here = _prepared(CONFIG, tiny_imdb, tmp_path / "here")
    monkeypatch.setattr(host, "one_malloc_arena", lambda: True)
    monkeypatch.setattr(task_lib, "_encode_splits", None)  # so only a child can encode
    child = _prepared(CONFIG, tiny_imdb, tmp_path / "child")
    assert (tmp_path / "here/tokenizer.json").read_bytes() == (
        tmp_path / "child/tokenizer.json"
    ).read_bytes()
    for name in ("train", "val", "test"):
        a, b = here.splits[name], child.splits[name]
        assert len(a.tokens) == len(b.tokens) > 0
        assert all(np.array_equal(x, y) for x, y in zip(a.tokens, b.tokens, strict=True))
        assert np.array_equal(a.labels, b.labels)
    test_only = SentimentTask(CONFIG, data=tiny_imdb)
    test_only.prepare(tmp_path / "child", ("test",))
    assert list(test_only.splits) == ["test"] and len(test_only.splits["test"].tokens) > 0
    vocabulary_only = SentimentTask(CONFIG, data=tmp_path / "missing")  # reads no reviews
    vocabulary_only.prepare(tmp_path / "child", ())
    assert vocabulary_only.splits == {} and vocabulary_only.tokenizer is not None
    with pytest.raises(data_lib.DataError, match="does not exist") as caught:  # in the child
        SentimentTask(CONFIG, data=tmp_path / "missing").prepare(tmp_path / "bad")
    assert written_for_users(caught.value) and caught.value.__cause__ is None
    with pytest.raises(AttributeError) as caught:  # a failure, as a bug there would raise
        task_lib._in_child(None, tiny_imdb, tmp_path / "tokenizer.json", ("train",), None)
    assert isinstance(caught.value.__cause__, ChildTraceback)
    assert "in _texts" in str(caught.value.__cause__)  # the child's own frames
    assert not written_for_users(caught.value)
    assert capfd.readouterr().err == ""  # every child ended quietly


@pytest.mark.slow
def test_what_the_child_prints_does_not_reach_its_answer(tiny_imdb, tmp_path, monkeypatch, capfd):
    import os
    import warnings

    from lstm_jax import host
    from lstm_jax.tasks.sentiment import task as task_lib

    here = _prepared(CONFIG, tiny_imdb, tmp_path / "here")
    # A child whose Python prints as it starts (a site hook), before our code runs.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text("print('hello from a site hook', flush=True)\n")
    paths = [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setattr(host, "one_malloc_arena", lambda: True)
    monkeypatch.setattr(task_lib, "_encode_splits", None)  # so only a child can encode
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to this process
        child = _prepared(CONFIG, tiny_imdb, tmp_path / "child")
    for name in ("train", "val", "test"):
        a, b = here.splits[name], child.splits[name]
        assert all(np.array_equal(x, y) for x, y in zip(a.tokens, b.tokens, strict=True))
    assert "hello from a site hook" in capfd.readouterr().out  # the hook ran


@pytest.mark.slow
@pytest.mark.parametrize("python", ["missing", "false"])
def test_a_child_that_cannot_answer_leaves_the_work_to_this_process(
    python, tiny_imdb, tmp_path, monkeypatch
):
    from lstm_jax import host
    from lstm_jax.tasks.sentiment import task as task_lib

    monkeypatch.setattr(host, "one_malloc_arena", lambda: True)
    # No program to start, or one that ends at once (perhaps before it reads the request).
    executable = str(tmp_path / "no-python") if python == "missing" else shutil.which("false")
    monkeypatch.setattr(task_lib.sys, "executable", executable)
    said = "did not start .* without" if python == "missing" else r"ended \(status 1\) without"
    with pytest.warns(UserWarning, match=f"{said} an answer"):
        task = _prepared(CONFIG, tiny_imdb, tmp_path)
    assert len(task.splits["train"].tokens) > 0


@pytest.mark.slow
def test_the_child_ends_when_its_parent_closes_the_pipe_or_dies():
    import subprocess
    import sys

    code = (
        "from lstm_jax.tasks.sentiment.task import _exit_with_parent; _exit_with_parent(); "
        "print('watching', flush=True); import time; time.sleep(60)"
    )
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    with subprocess.Popen([sys.executable, "-c", code], **pipes) as child:
        assert child.stdout.readline() == "watching\n"  # alive while the pipe is open
        child.stdin.close()  # what the kernel does to a pipe when its parent dies
        assert child.wait(timeout=20) == 1  # long before its minute of sleep


# ----------------------------------------------------------------------------------
# Every config field reaches what it controls. A new field without a check here fails
# `test_every_config_field_is_checked`.
# ----------------------------------------------------------------------------------
def _check_seed(tiny_imdb, tmp_path):
    a = _prepared(CONFIG, tiny_imdb, tmp_path / "a")
    b = _prepared(CONFIG.replace(seed=1), tiny_imdb, tmp_path / "b")
    init = lambda t: t.init_params(jax.random.key(t.config.seed))  # noqa: E731
    assert not np.array_equal(init(a)["embedding"]["embedding"], init(b)["embedding"]["embedding"])
    assert [len(x) for x in a.splits["val"].tokens] != [len(x) for x in b.splits["val"].tokens]
    order = lambda t: [x.lengths.tolist() for x in t.batches("train", 0)]  # noqa: E731
    assert order(a) != order(b)


def _check_epochs(tiny_imdb, tmp_path):
    results = train.fit(
        SentimentTask(CONFIG.replace(epochs=1), data=tiny_imdb), tmp_path, progress=False
    )
    assert results["epochs"] == 1 and len(train.history.read(tmp_path)) == 1


def _check_batch_size(tiny_imdb, tmp_path):
    task = _prepared(CONFIG.replace(batch_size=4), tiny_imdb, tmp_path)
    assert {b.tokens.shape[0] for b in task.batches("train")} == {4}


def _check_model(tiny_imdb, tmp_path):
    task = SentimentTask(CONFIG.replace(model="stacked", vocab_size=8185))
    params = jax.eval_shape(task.init_params, jax.random.key(0))
    assert sum(x.size for x in jax.tree.leaves(params)) == 635_329


def _check_vocab_size(tiny_imdb, tmp_path):
    task = _prepared(CONFIG.replace(vocab_size=280), tiny_imdb, tmp_path)
    assert task.tokenizer.vocab_size == 280
    params = jax.eval_shape(task.init_params, jax.random.key(0))
    assert params["embedding"]["embedding"].shape[0] == 280


def _check_normalize_text(tiny_imdb, tmp_path):
    for normalize in (False, True):
        task = _prepared(
            CONFIG.replace(normalize_text=normalize), tiny_imdb, tmp_path / str(normalize)
        )
        assert task.tokenizer.normalizes == normalize
        same = np.array_equal(
            task.tokenizer.encode("GREAT<br />film"), task.tokenizer.encode("great film")
        )
        assert same == normalize


def _two_reviews(tokens: jax.Array | None = None) -> data_lib.Batch:
    """A batch of two reviews of lengths 6 and 3, labelled 0 and 1."""
    tokens = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) if tokens is None else tokens
    return data_lib.Batch(tokens, jnp.array([6, 3], jnp.int32), jnp.array([0, 1]), jnp.ones(2))


def _dropout_varies(config: SentimentConfig, batch: data_lib.Batch) -> bool:
    """Whether two dropout keys give different training losses on `batch`."""
    task = SentimentTask(config)
    params = task.init_params(jax.random.key(0))
    runs = [task.metrics(params, batch, train=True, rng=jax.random.key(k))["loss"] for k in (1, 2)]
    return bool(runs[0] != runs[1])


def _check_dropout(tiny_imdb, tmp_path):
    batch = _two_reviews(jnp.ones((2, 6), jnp.int32))
    for rate, varies in ((0.0, False), (0.5, True)):
        assert _dropout_varies(CONFIG.replace(dropout=rate), batch) == varies


def _check_layer_dropout(tiny_imdb, tmp_path):
    for rate, varies in ((0.0, False), (0.5, True)):
        config = CONFIG.replace(model="stacked", layer_dropout=rate)
        assert _dropout_varies(config, _two_reviews()) == varies
    with pytest.raises(ConfigError, match="needs the stacked model: 'bilstm' has one"):
        CONFIG.replace(layer_dropout=0.5)


def _dropped(config: SentimentConfig, name: str) -> list[np.ndarray]:
    """The outputs of the classifier's dropout layers called `name`, one training call."""
    found = [v for path, v in traverse_util.flatten_dict(_intermediates(config)).items()
             if name in path]  # fmt: skip
    return [np.asarray(out) for outs in found for out in outs]


def _intermediates(config: SentimentConfig) -> dict:
    """The outputs of every dropout layer of the classifier, one training call."""
    task = SentimentTask(config)
    params = task.init_params(jax.random.key(0))
    batch = _two_reviews()
    _, state = task.model.apply(
        {"params": params},
        batch.tokens,
        batch.lengths,
        train=True,
        rngs={"dropout": jax.random.key(3)},
        capture_intermediates=lambda module, _: isinstance(module, nn.Dropout),
        mutable=["intermediates"],
    )
    return state["intermediates"]


def _check_embed_dropout(tiny_imdb, tmp_path):
    for rate, varies in ((0.0, False), (0.5, True)):
        assert _dropout_varies(CONFIG.replace(embed_dropout=rate), _two_reviews()) == varies
    (embedded,) = _dropped(CONFIG.replace(embed_dropout=0.5), "embed_dropout")
    zero_BE = embedded[:, 0] == 0
    assert zero_BE.any() and not zero_BE.all()
    assert np.array_equal(embedded == 0, np.broadcast_to(zero_BE[:, None], embedded.shape))


def test_dropout_layers_keep_their_names():
    """A dropout mask derives from its layer's name: options added later leave the
    names of the word and output dropouts, and so a seed's run, as they were."""
    assert set(_intermediates(CONFIG.replace(dropout=0.5))) == {
        "Dropout_0",  # word dropout
        "embed_dropout",
        "Dropout_1",  # output dropout
    }


def _check_weight_drop(tiny_imdb, tmp_path):
    for model in ("bilstm", "stacked"):
        for rate, varies in ((0.0, False), (0.5, True)):
            config = CONFIG.replace(model=model, weight_drop=rate)
            assert _dropout_varies(config, _two_reviews()) == varies
    # One mask per direction and layer, each dropping about the rate's share of the kernel.
    kernels = _dropped(CONFIG.replace(model="stacked", weight_drop=0.5), "weight_drop")
    masks = [k == 0 for k in kernels]
    assert len(masks) == 4 and all(0.3 < m.mean() < 0.7 for m in masks)
    assert not np.array_equal(masks[0], masks[1])


def _check_head(tiny_imdb, tmp_path):
    for head, features in (("last", 128), ("pool", 256)):
        params = SentimentTask(CONFIG.replace(head=head)).init_params(jax.random.key(0))
        assert params["dense"]["kernel"].shape == (features, 64)


def _check_label_smoothing(tiny_imdb, tmp_path):
    batch = _two_reviews()
    loss = {}
    for smoothing in (0.0, 0.2):
        task = SentimentTask(CONFIG.replace(label_smoothing=smoothing))
        params = task.init_params(jax.random.key(0))
        for train_ in (True, False):
            metrics = task.metrics(params, batch, train=train_, rng=jax.random.key(1))
            loss[smoothing, train_] = metrics["loss"]
    logits = task.model.apply({"params": params}, batch.tokens, batch.lengths)
    smoothed = optax.sigmoid_binary_cross_entropy(logits, jnp.array([0.1, 0.9])).sum()
    np.testing.assert_allclose(loss[0.2, True], smoothed, rtol=1e-6)
    assert loss[0.2, True] != loss[0.0, True] and loss[0.2, False] == loss[0.0, False]


def _replicated(task: SentimentTask, params, batch: data_lib.Batch) -> tuple[jax.Array, dict]:
    """The model's training logits and what it sowed, with the metrics' dropout key."""
    return task.model.apply(
        {"params": params}, batch.tokens, batch.lengths, train=True,
        rngs={"dropout": jax.random.key(1)}, mutable=["intermediates"],
    )  # fmt: skip


def _check_target_replication(tiny_imdb, tmp_path):
    batch = _two_reviews()  # lengths 6 and 3, labels 0 and 1
    task = SentimentTask(CONFIG.replace(target_replication=0.25, replicate_every=2))
    plain = SentimentTask(CONFIG)
    params = task.init_params(jax.random.key(0))
    shapes = jax.tree.map(jnp.shape, plain.init_params(jax.random.key(0)))
    assert jax.tree.map(jnp.shape, params) == shapes  # no parameter added
    logits, sown = _replicated(task, params, batch)
    np.testing.assert_allclose(logits, plain.model.apply({"params": params}, *batch[:2]), rtol=1e-6)
    (steps,) = sown["intermediates"]["step_logits"]
    assert steps.shape == (2, 3)  # steps 0, 2 and 4
    per_step = optax.sigmoid_binary_cross_entropy(steps, jnp.array([[0.0], [1.0]]))
    replicated = jnp.array([per_step[0].mean(), per_step[1, :2].mean()])  # 2 of 3 steps real
    final = optax.sigmoid_binary_cross_entropy(logits, jnp.array([0.0, 1.0]))
    loss = task.metrics(params, batch, train=True, rng=jax.random.key(1))["loss"]
    np.testing.assert_allclose(loss, jnp.sum(0.75 * final + 0.25 * replicated), rtol=1e-6)
    for name in ("loss", "accuracy"):  # evaluation reads the final states alone
        evaluated = task.metrics(params, batch, train=False, rng=None)[name]
        assert evaluated == plain.metrics(params, batch, train=False, rng=None)[name]
    with pytest.raises(ConfigError, match="target_replication needs head 'last'"):
        CONFIG.replace(target_replication=0.5, head="pool")


def _check_replicate_every(tiny_imdb, tmp_path):
    batch = _two_reviews()
    for every, count in ((1, 6), (4, 2)):
        task = SentimentTask(CONFIG.replace(target_replication=0.5, replicate_every=every))
        _, sown = _replicated(task, task.init_params(jax.random.key(0)), batch)
        assert sown["intermediates"]["step_logits"][0].shape == (2, count)
    task = SentimentTask(CONFIG.replace(replicate_every=4))  # no weight: nothing replicated
    _, sown = _replicated(task, task.init_params(jax.random.key(0)), batch)
    assert "intermediates" not in sown


def _check_val_fraction(tiny_imdb, tmp_path):
    task = _prepared(CONFIG.replace(val_fraction=0.5), tiny_imdb, tmp_path)
    assert len(task.splits["val"].labels) == len(task.splits["train"].labels) == 48


def _check_max_len(tiny_imdb, tmp_path):
    task = _prepared(CONFIG.replace(max_len=8), tiny_imdb, tmp_path)
    for split in ("train", "val", "test"):
        assert max(b.tokens.shape[1] for b in task.batches(split)) == 8


def _check_train_max_len(tiny_imdb, tmp_path):
    task = _prepared(CONFIG.replace(train_max_len=8), tiny_imdb, tmp_path)
    longest = {s: max(b.tokens.shape[1] for b in task.batches(s)) for s in ("train", "val", "test")}
    assert longest["train"] == 8 and longest["val"] > 8 and longest["test"] > 8
    assert task.num_batches("train") == len(task.batches("train"))
    both = _prepared(CONFIG.replace(train_max_len=8, max_len=5), tiny_imdb, tmp_path / "both")
    assert max(b.tokens.shape[1] for b in both.batches("train")) == 5


def _check_max_train_examples(tiny_imdb, tmp_path):
    task = _prepared(CONFIG.replace(max_train_examples=20), tiny_imdb, tmp_path)
    labels = task.splits["train"].labels
    assert len(labels) == 20 and 0 < labels.sum() < 20


def _first_updates(config, grads, steps=1):
    """The optimizer's first `steps` updates of one parameter, all with gradient `grads`."""
    optimizer = train.Trainer(SentimentTask(config), steps_per_epoch=1).optimizer
    params = {"w": jnp.ones(3)}
    state, out = optimizer.init(params), []
    for _ in range(steps):
        updates, state = optimizer.update({"w": grads}, state, params)
        out.append(np.asarray(updates["w"]))
    return out


def _check_learning_rate(tiny_imdb, tmp_path):
    first = _first_updates(CONFIG.replace(learning_rate=3e-3, clip_norm=0.0), jnp.ones(3))[0]
    np.testing.assert_allclose(-first, 3e-3, rtol=1e-4)


def _check_schedule(tiny_imdb, tmp_path):
    config = CONFIG.replace(epochs=2, clip_norm=0.0)  # cosine: to 0 over 2 steps
    cosine = _first_updates(config.replace(schedule="cosine"), jnp.ones(3), steps=3)
    constant = _first_updates(config, jnp.ones(3), steps=3)
    assert cosine[2][0] == 0.0 and constant[2][0] < 0.0


def _check_decay_fraction(tiny_imdb, tmp_path):
    config = CONFIG.replace(epochs=4, clip_norm=0.0, schedule="wsd")  # 4 steps
    half = _first_updates(config.replace(decay_fraction=0.5), jnp.ones(3), steps=4)
    whole = _first_updates(config.replace(decay_fraction=1.0), jnp.ones(3), steps=4)
    peak = -half[0][0]  # held for 3 steps, then 1/2; decaying from the start: 1, 3/4, 1/2, 1/4
    np.testing.assert_allclose([-u[0] / peak for u in half], [1, 1, 1, 0.5], rtol=1e-4)
    np.testing.assert_allclose([-u[0] / peak for u in whole], [1, 0.75, 0.5, 0.25], rtol=1e-4)


def _check_warmup_epochs(tiny_imdb, tmp_path):
    config = CONFIG.replace(epochs=4, warmup_epochs=2, clip_norm=0.0, learning_rate=1e-2)
    for schedule in ("constant", "cosine"):  # 0, half the rate, then the schedule
        first = _first_updates(config.replace(schedule=schedule), jnp.ones(3), steps=4)
        np.testing.assert_allclose([-u[0] for u in first[:3]], [0.0, 5e-3, 1e-2], rtol=1e-4)
        if schedule == "constant":
            np.testing.assert_allclose(first[3], first[2], rtol=1e-4)
        else:
            assert -first[3][0] < 0.9e-2
    with pytest.raises(ConfigError, match=r"warmup_epochs \(4.0\) must be below epochs \(4\)"):
        CONFIG.replace(epochs=4, warmup_epochs=4)


def _check_clip_norm(tiny_imdb, tmp_path):
    big = jnp.array([300.0, 400.0, 0.0])  # norm 500
    clipped = _first_updates(CONFIG.replace(clip_norm=1.0, learning_rate=1.0), big, steps=2)
    plain = _first_updates(CONFIG.replace(clip_norm=0.0, learning_rate=1.0), big / 500, steps=2)
    np.testing.assert_allclose(clipped[1], plain[1], rtol=1e-6)  # clipped to norm 1


def _check_matmul_dtype(tiny_imdb, tmp_path):
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 50, (3, 12)), jnp.int32)
    batch = data_lib.Batch(
        tokens, jnp.array([12, 7, 1], jnp.int32), jnp.array([0, 1, 1]), jnp.ones(3)
    )
    low, ref = (SentimentTask(CONFIG.replace(matmul_dtype=d)) for d in ("bfloat16", "float32"))
    params = ref.init_params(jax.random.key(0))
    a = low.metrics(params, batch, train=False, rng=None)["loss"]
    b = ref.metrics(params, batch, train=False, rng=None)["loss"]
    assert 0.0 < abs(float(a - b)) < 1e-2 * abs(float(b))  # rounded, so bfloat16 ran


def _check_engine(tiny_imdb, tmp_path):
    tokens, lengths = jnp.ones((2, 4), jnp.int32), jnp.array([4, 2], jnp.int32)
    for engine, fused in (("fused", True), ("scan", False)):
        task = SentimentTask(CONFIG.replace(engine=engine))
        params = task.init_params(jax.random.key(0))
        jaxpr = jax.make_jaxpr(lambda p, t=task: t.model.apply({"params": p}, tokens, lengths))
        assert ("custom_vjp" in str(jaxpr(params))) == fused  # the fused engine's own VJP
    refused = r"'bfloat16' needs the 'lstm' cell on a fused engine .*--matmul-dtype float32"
    with pytest.raises(ConfigError, match=refused):
        CONFIG.replace(engine="scan", matmul_dtype="bfloat16")


def _check_ema_decay(tiny_imdb, tmp_path):
    task = _prepared(CONFIG.replace(ema_decay=0.9), tiny_imdb, tmp_path)
    trainer = train.Trainer(task)
    state, _ = trainer.train_step(trainer.init_state(), task.batches("train")[0])
    ema, params = jax.tree.leaves(state.ema), jax.tree.leaves(state.params)
    assert state.eval_params is state.ema and any(
        np.any(a != b) for a, b in zip(ema, params, strict=True)
    )
    plain = train.Trainer(SentimentTask(CONFIG)).init_state()
    assert plain.ema is None and plain.eval_params is plain.params


def _check_weight_decay(tiny_imdb, tmp_path):
    config = CONFIG.replace(weight_decay=0.5, learning_rate=0.1, clip_norm=0.0)
    task = _prepared(config, tiny_imdb, tmp_path)
    optimizer = train.Trainer(task).optimizer
    params = task.init_params(jax.random.key(0))
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zero, optimizer.init(params), params)
    for p, u in zip(jax.tree.leaves(params), jax.tree.leaves(updates), strict=True):
        np.testing.assert_allclose(u, -0.05 * p if p.ndim >= 2 else 0.0, rtol=1e-6, atol=1e-9)


CHECKS = {
    "seed": _check_seed,
    "epochs": _check_epochs,
    "batch_size": _check_batch_size,
    "learning_rate": _check_learning_rate,
    "schedule": _check_schedule,
    "decay_fraction": _check_decay_fraction,
    "warmup_epochs": _check_warmup_epochs,
    "clip_norm": _check_clip_norm,
    "ema_decay": _check_ema_decay,
    "weight_decay": _check_weight_decay,
    "matmul_dtype": _check_matmul_dtype,
    "engine": _check_engine,
    "model": _check_model,
    "head": _check_head,
    "vocab_size": _check_vocab_size,
    "normalize_text": _check_normalize_text,
    "dropout": _check_dropout,
    "label_smoothing": _check_label_smoothing,
    "target_replication": _check_target_replication,
    "replicate_every": _check_replicate_every,
    "layer_dropout": _check_layer_dropout,
    "embed_dropout": _check_embed_dropout,
    "weight_drop": _check_weight_drop,
    "val_fraction": _check_val_fraction,
    "max_len": _check_max_len,
    "max_train_examples": _check_max_train_examples,
    "train_max_len": _check_train_max_len,
}


def test_every_config_field_is_checked():
    assert set(CHECKS) == {f.name for f in dataclasses.fields(SentimentConfig)}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= set(CHECKS)


@pytest.mark.parametrize("field", sorted(CHECKS))
def test_config_field_reaches_what_it_controls(field, tiny_imdb, tmp_path):
    CHECKS[field](tiny_imdb, tmp_path)
