"""The character-level language model on small texts made here: reading and the vocabulary,
windows, the loss, the model's step against its window, sampling, a tiny fit, the
command, every config field."""

import dataclasses
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstm_jax import cli, train
from lstm_jax.models import CharLM
from lstm_jax.tasks.charlm import CharLMConfig, CharLMTask, Sampler
from lstm_jax.tasks.charlm.generate import _filtered
from lstm_jax.tasks.charlm.text import Vocabulary, read_text
from lstm_jax.tasks.errors import DataError
from lstm_jax.train.config import ConfigError

PATTERN = "the cat sat.\n"
TINY = CharLMConfig(
    window=16,
    hidden=32,
    layers=1,
    embed_dim=8,
    batch_size=16,
    epochs=4,
    learning_rate=1e-2,
)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "pattern.txt"
    path.write_text(PATTERN * 400)
    return path


def _prepared(tmp_path, text_file, **changes):
    task = CharLMTask(TINY.replace(text=str(text_file), **changes))
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    task.prepare(tmp_path / "run")
    return task


# ----------------------------------------------------------------------------------
# Reading and the vocabulary.
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"caf\xe9 au lait", "is not UTF-8 text: byte 3 is 0xe9"),
    ],
)
def test_bad_text_files_are_named_errors(tmp_path, content, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_text(path)
    with pytest.raises(DataError, match="not found"):
        read_text(tmp_path / "missing.txt")


def test_a_text_shorter_than_one_window_is_an_error(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("x" * 100)
    with pytest.raises(DataError, match=r"val part has 10 characters .* window of 17"):
        CharLMTask(TINY.replace(text=str(path))).prepare(tmp_path)


def test_vocabulary_round_trips_and_names_an_unknown_character(tmp_path):
    vocab = Vocabulary.of("hello, world")
    assert vocab.symbols == " ,dehlorw"
    ids = vocab.encode("world")
    assert ids.dtype == np.int32 and vocab.decode(ids) == "world"
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").symbols == vocab.symbols
    with pytest.raises(DataError, match=r"the prompt has 'Z' at character 2"):
        vocab.encode("hoZ", where="the prompt")


def test_unicode_text_keeps_its_characters(tmp_path):
    path = tmp_path / "u.txt"
    path.write_text("naïve café – ωμέγα\n" * 50, encoding="utf-8")
    task = CharLMTask(TINY.replace(text=str(path)))
    task.prepare(tmp_path)
    assert {"ï", "–", "ω"} <= set(task.vocab.symbols)
    assert Vocabulary.load(tmp_path / Vocabulary.FILE).symbols == task.vocab.symbols


# ----------------------------------------------------------------------------------
# Windows.
# ----------------------------------------------------------------------------------
def test_the_split_is_first_90_percent_then_the_rest(tmp_path, text_file):
    task = _prepared(tmp_path, text_file)
    text = read_text(text_file)
    cut = int(len(text) * 0.9)
    assert task.vocab.decode(task.parts["train"]) == text[:cut]
    assert task.vocab.decode(task.parts["val"]) == text[cut:]
    assert task.parts["test"] is task.parts["val"]


def test_training_windows_are_random_slices_fixed_by_seed_and_epoch(tmp_path, text_file):
    task = _prepared(tmp_path, text_file)
    batches = task.batches("train", 0)
    assert len(batches) == task.num_batches("train") == (len(task.parts["train"]) // 16) // 16
    text = task.vocab.decode(task.parts["train"])
    for row in batches[0].ids:
        assert row.shape == (17,) and task.vocab.decode(row) in text
    np.testing.assert_array_equal(task.batches("train", 0)[3].ids, batches[3].ids)
    assert not np.array_equal(task.batches("train", 1)[3].ids, batches[3].ids)


def test_validation_windows_are_consecutive_and_padded_with_zero_weight(tmp_path, text_file):
    task = _prepared(tmp_path, text_file)
    batches = task.batches("val")
    assert len(batches) == task.num_batches("val")
    ids = np.concatenate([b.ids for b in batches])
    weights = np.concatenate([b.weights for b in batches])
    real = ids[weights == 1]
    np.testing.assert_array_equal(real[1:, 0], real[:-1, -1])  # each starts where one ended
    np.testing.assert_array_equal(real[0], task.parts["val"][:17])
    assert weights.sum() == len(range(0, len(task.parts["val"]) - 16, 16))


# ----------------------------------------------------------------------------------
# Model and loss.
# ----------------------------------------------------------------------------------
def test_one_step_at_a_time_gives_the_window_logits():
    model = CharLM(11, hidden=8, layers=2, embed_dim=4, engine="fused")
    ids = jax.random.randint(jax.random.key(1), (3, 7), 0, 11)
    params = model.init(jax.random.key(0), ids)["params"]
    logits, finals = model.apply({"params": params}, ids)
    carries, steps = model.zero_carries(3), []
    for t in range(7):
        out, carries = model.apply({"params": params}, carries, ids[:, t], method=CharLM.step)
        steps.append(out)
    np.testing.assert_allclose(jnp.stack(steps, 1), logits, atol=1e-5)
    for a, b in zip(jax.tree.leaves(carries), jax.tree.leaves(finals), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_the_embedding_starts_at_unit_scale():
    # Flax's default, std 1/sqrt(64), made the first epochs learn slowly (docs/charlm.md).
    model = CharLM(65, hidden=8, layers=1, embed_dim=64)
    params = model.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))["params"]
    assert 0.95 < float(jnp.std(params["embed"]["embedding"])) < 1.05


def test_the_loss_is_cross_entropy_summed_over_positions(tmp_path, text_file):
    task = _prepared(tmp_path, text_file)
    params = task.init_params(jax.random.key(0))
    batch = task.batches("val")[-1]  # a padded one
    sums = task.metrics(params, batch, train=False, rng=None)
    logits, _ = task.model.apply({"params": params}, batch.ids[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.ids[:, 1:])
    real = batch.weights == 1
    assert float(sums["count"]) == real.sum() * 16
    np.testing.assert_allclose(sums["loss"], ce[real].sum(), rtol=1e-5)
    assert task.report({"loss": 2.0})["bpc"] == pytest.approx(2.0 / math.log(2))


def test_the_stream_loss_carries_the_state_from_window_to_window(tmp_path, text_file):
    task = _prepared(tmp_path, text_file, val_fraction=0.05)  # 259 characters: 2 pieces
    params = task.init_params(jax.random.key(0))
    part = task.parts["val"]
    length = (len(part) - 1) // 2
    assert length > 7 * task.config.window  # the pieces span several windows
    pieces = np.stack([part[: length + 1], part[length : 2 * length + 1]])
    logits, _ = task.model.clone(engine="scan").apply({"params": params}, pieces[:, :-1])
    whole = optax.softmax_cross_entropy_with_integer_labels(logits, pieces[:, 1:]).mean()
    np.testing.assert_allclose(task.stream_loss(params, streams=2), whole, rtol=1e-5)
    # At most one stream per window of the part: 64 asked, 16 read.
    windows = (len(part) - 1) // task.config.window
    assert task.stream_loss(params, streams=64) == pytest.approx(
        task.stream_loss(params, streams=windows)
    )


# ----------------------------------------------------------------------------------
# Sampling.
# ----------------------------------------------------------------------------------
def test_filtering_keeps_the_top_k_and_the_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda out: np.isfinite(np.asarray(out))[0].tolist()  # noqa: E731
    assert kept(_filtered(logits, 2, None)) == [True, True, False, False]
    assert kept(_filtered(logits, None, 0.7)) == [True, True, False, False]
    assert kept(_filtered(logits, None, 0.5)) == [True, False, False, False]
    assert kept(_filtered(logits, None, 1.0)) == [True] * 4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, text_file):
    workdir = tmp_path_factory.mktemp("charlm")
    results = train.fit(CharLMTask(TINY.replace(text=str(text_file))), workdir, progress=False)
    return workdir, results


def test_a_tiny_fit_learns_the_pattern_and_continues_it(tiny_run):
    workdir, results = tiny_run
    assert results["test_loss"] < 0.5 * math.log(len(set(PATTERN)))  # far below uniform
    assert results["test_bpc"] == pytest.approx(results["test_loss"] / math.log(2))
    sampler = Sampler.from_run(workdir)
    (greedy,) = sampler.generate("the cat", 2 * len(PATTERN), temperature=0)
    assert greedy.startswith(" sat.\nthe cat sat.")
    assert (workdir / "val_loss_time.png").stat().st_size > 1000
    assert (workdir / "sample.txt").read_text().startswith("\nthe cat sat.")  # no "ROMEO:" here
    # Read as streams the periodic text is as easy as in windows (its period is shorter).
    assert results["val_stream_loss"] == pytest.approx(results["test_loss"], rel=0.05)
    assert results["val_stream_bpc"] == pytest.approx(results["val_stream_loss"] / math.log(2))


def test_evaluate_reports_the_stream_loss_of_the_run(tiny_run, capsys):
    workdir, results = tiny_run
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[: out.index("\n\n")])["loss"] == pytest.approx(results["test_loss"])
    assert f"| {results['val_stream_loss']:.4f} | {results['val_stream_bpc']:.4f} |" in out


def test_sampling_is_reproducible_and_streams_the_same_text(tiny_run):
    sampler = Sampler.from_run(tiny_run[0])
    options = dict(temperature=1.5, seed=7, num_samples=3)
    whole = sampler.generate("t", 40, **options)
    chunks = list(sampler.stream("t", 40, chunk=9, **options))
    assert len(chunks) == 5 and all(len(c) == 3 for c in chunks)
    assert ["".join(parts) for parts in zip(*chunks, strict=True)] == whole
    assert sampler.generate("t", 40, **options) == whole
    assert sampler.generate("t", 40, **{**options, "seed": 8}) != whole
    assert len(set(whole)) > 1  # the batch's samples differ
    greedy = sampler.generate("t", 40, temperature=0, num_samples=2)
    assert greedy[0] == greedy[1] == sampler.generate("t", 40, top_k=1, seed=3)[0]


@pytest.mark.slow
def test_a_run_saved_on_two_devices_samples_in_a_one_device_process(tiny_run):
    code = (
        "import sys; from lstm_jax import host; host.configure(1); import jax; "
        "from lstm_jax.tasks.charlm import Sampler; assert len(jax.devices()) == 1; "
        "print(Sampler.from_run(sys.argv[1]).generate('the cat', 6, temperature=0)[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_run[0])], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == " sat.\n\n"


@pytest.mark.slow
@pytest.mark.parametrize("onednn", [True, False])
def test_the_generation_benchmark_gives_pytorch_the_same_weights(tiny_run, onednn):
    pytest.importorskip("torch")
    from benchmarks import charlm_generate

    sampler = Sampler.from_run(tiny_run[0])
    theirs = charlm_generate.torch_generator(sampler, "the c", 30)
    ours = sampler.generate("the c", 30, temperature=0)
    assert theirs(1, 0, temperature=0, onednn=onednn) == ours and ours[0].startswith("at sat.")
    drawn = theirs(3, 5, temperature=1.5, onednn=onednn)
    assert len(drawn) == 3 and all(len(text) == 30 for text in drawn)


def test_sampling_errors_are_clear(tiny_run):
    sampler = Sampler.from_run(tiny_run[0])
    with pytest.raises(DataError, match="prompt is empty"):
        sampler.generate("", 5)
    with pytest.raises(DataError, match="'Q' at character 0"):
        sampler.generate("Q", 5)
    with pytest.raises(ValueError, match="top_p"):
        sampler.generate("t", 5, top_p=0.0)


def test_the_generate_command(tiny_run, capsys):
    workdir = str(tiny_run[0])
    assert cli.main(["generate", "--workdir", workdir, "--prompt", "the", "--length", "30"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the") and len(out) == len("the") + 30 + 1
    assert cli.main(["generate", "--workdir", workdir, "--prompt", "thZ"]) == 2
    assert capsys.readouterr().out == ""  # a rejected prompt is not echoed
    args = ["generate", "--workdir", workdir, "--prompt", "the", "--num-samples", "2"]
    assert cli.main([*args, "--length", "10", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 2
    assert cli.main([*args, "--prompt", "Z"]) == 2
    assert "'Z' at character 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*args, "--top-p", "1.5"])


# ----------------------------------------------------------------------------------
# Every config field reaches what it controls.
# ----------------------------------------------------------------------------------
def _params(task):
    return task.init_params(jax.random.key(0))


def _check_text(tmp_path, text_file):
    other = tmp_path / "other.txt"
    other.write_text("abc\n" * 300)
    return _prepared(tmp_path / "a", other).vocab.symbols == "\nabc"


def _check_window(tmp_path, text_file):
    return _prepared(tmp_path, text_file, window=8).batches("val")[0].ids.shape == (16, 9)


def _check_val_fraction(tmp_path, text_file):
    task = _prepared(tmp_path, text_file, val_fraction=0.5)
    return len(task.parts["val"]) == len(task.parts["train"]) == len(PATTERN) * 200


def _check_cell(tmp_path, text_file):
    layer = _params(_prepared(tmp_path, text_file, cell="gru"))["layer_0"]
    return "kernel" in layer and layer["kernel"].shape == (8, 96)


def _check_hidden(tmp_path, text_file):
    return _params(_prepared(tmp_path, text_file, hidden=5))["head"]["kernel"].shape[0] == 5


def _check_layers(tmp_path, text_file):
    return {"layer_0", "layer_1", "layer_2"} <= set(
        _params(_prepared(tmp_path, text_file, layers=3))
    )


def _check_embed_dim(tmp_path, text_file):
    params = _params(_prepared(tmp_path, text_file, embed_dim=3))
    return params["embed"]["embedding"].shape[1] == 3


def _check_dropout(tmp_path, text_file):
    task = _prepared(tmp_path, text_file, dropout=0.5)
    params, batch = _params(task), task.batches("train")[0]
    runs = [task.metrics(params, batch, train=True, rng=jax.random.key(k))["loss"] for k in (1, 2)]
    return bool(runs[0] != runs[1])


def _check_weight_drop(tmp_path, text_file):
    def losses(rate, train):
        task = _prepared(tmp_path / str(rate), text_file, weight_drop=rate)
        params, batch = _params(task), task.batches("train")[0]
        return [
            float(task.metrics(params, batch, train=train, rng=jax.random.key(k))["loss"])
            for k in (1, 2)
        ]

    # Training draws a fresh mask (the loss varies with the rng); evaluation uses it all.
    dropped, kept = losses(0.5, True), losses(0.0, True)
    return dropped[0] != dropped[1] and kept[0] == kept[1] and losses(0.5, False) == kept


CHECKS = {
    "text": _check_text,
    "window": _check_window,
    "val_fraction": _check_val_fraction,
    "cell": _check_cell,
    "hidden": _check_hidden,
    "layers": _check_layers,
    "embed_dim": _check_embed_dim,
    "dropout": _check_dropout,
    "weight_drop": _check_weight_drop,
}


def test_every_charlm_field_is_checked():
    shared = {f.name for f in dataclasses.fields(train.TrainConfig)}  # tests/test_sentiment.py
    assert set(CHECKS) == {f.name for f in dataclasses.fields(CharLMConfig)} - shared


@pytest.mark.parametrize("field", sorted(CHECKS))
def test_charlm_field_reaches_what_it_controls(field, tmp_path, text_file):
    assert CHECKS[field](tmp_path, text_file)


def test_bfloat16_matmuls_with_another_cell_are_refused_when_the_config_is_built():
    # Only the fused LSTM has them: refused before the text is read or the run written.
    with pytest.raises(ConfigError, match=r"'lstm' cell on a fused engine .* cell 'gru' on"):
        TINY.replace(cell="gru", matmul_dtype="bfloat16")
    assert TINY.replace(matmul_dtype="bfloat16").matmul_dtype == "bfloat16"
    assert TINY.replace(cell="gru", matmul_dtype="float32").cell == "gru"


def test_the_configs_name_the_shared_text():
    from lstm_jax import configs

    for name in ("charlm_shakespeare", "charlm_quick"):
        config = configs.get(name)
        assert config.text.endswith("tinyshakespeare.txt") and json.dumps(config.to_dict())
