"""The benchmark harness (`benchmarks/`, outside the package): its counting, options and
what its workers report on a tiny workload (the slower tier). Timings are never asserted."""

import json

import numpy as np
import pytest

from benchmarks import harness as benchmark
from benchmarks import reference


def test_flop_count_follows_the_documented_formula():
    # bilstm: one bidirectional layer, E = H = 64: 3 * 2 * 2*B*T*(64+64)*4*64.
    assert benchmark.step_flops("bilstm", 2, 3) == 3 * 2 * 2 * 2 * 3 * 128 * 256
    # stacked adds a layer over the first one's 128 outputs with H = 32.
    extra = 3 * 2 * 2 * 2 * 3 * (128 + 32) * 4 * 32
    assert benchmark.step_flops("stacked", 2, 3) == benchmark.step_flops("bilstm", 2, 3) + extra


def test_charlm_flops_count_one_direction_and_the_output_layer():
    # 2 layers of 512 over E = 64, then the output layer (512 -> 65) at every position.
    forward = 2 * 2 * 3 * (64 + 512) * 2048 + 2 * 2 * 3 * 1024 * 2048 + 2 * 2 * 3 * 512 * 65
    assert benchmark.step_flops("charlm", 2, 3) == 3 * forward


def test_expected_params_match_the_keras_summaries():
    assert benchmark.expected_params("bilstm") == 598_209
    assert benchmark.expected_params("stacked") == 635_329
    assert benchmark.expected_params("charlm") == 3_318_401  # CharLM(65, 512, 2, 64)


@pytest.mark.parametrize("workload", ["bilstm", "stacked", "charlm"])
def test_reference_forward_is_the_library_models(workload):
    """The float64 NumPy loop the rows are checked against computes the library's models."""
    import jax

    from lstm_jax.models import CharLM, SentimentClassifier

    spec = benchmark.WORKLOADS[workload]
    weights = reference.make_weights(spec)
    data = benchmark.random_batch(3, 7, 1, workload)
    logits, loss = reference.forward(weights, spec["kind"], data)
    params = jax.tree.map(np.asarray, weights)
    if workload == "charlm":
        ours, _ = CharLM(65, 512, 2, 64).apply({"params": params}, data["ids"][:, :-1])
        assert logits.shape == (3, 7, 65) and 3.5 < loss < 5.0
    else:
        model = SentimentClassifier(spec["vocab"], workload)
        ours = model.apply({"params": params}, data["tokens"], data["lengths"])
    assert reference.check((logits, loss), np.asarray(ours)[:2], loss, "float32") is None
    np.testing.assert_allclose(np.asarray(ours), logits, atol=1e-5)


def test_check_names_what_differs():
    logits, loss = np.array([0.1, -0.2, 0.3]), 0.7
    assert reference.check((logits, loss), logits + 5e-5, loss, "float32") is None
    assert "logits differ" in reference.check((logits, loss), logits + 1e-3, loss, "float32")
    assert reference.check((logits, loss), logits + 1e-3, loss, "bfloat16") is None
    assert "shape" in reference.check((logits, loss), logits[:, None], loss, "float32")
    assert "loss 0.701000" in reference.check((logits, loss), logits, 0.701, "float32")
    nan = reference.check((logits, loss), logits * np.nan, loss, "float32")
    assert "logits differ" in nan


@pytest.mark.parametrize("impl", ["flax", "lstm_jax-lib", "lstm_jax-lib-bf16"])
def test_rows_load_the_shared_weights_and_pass_the_check(impl):
    spec = benchmark.WORKLOADS["stacked"]
    weights = reference.make_weights(spec)
    data = benchmark.random_batch(4, 6, 0, "stacked")
    runner = benchmark.BUILDERS[impl]("stacked", data, weights)
    logits, loss = runner.check()
    expected = reference.forward(weights, "classifier", data)
    assert reference.check(expected, logits, loss, benchmark.precision(impl)) is None
    runner.step()
    assert reference.check_loss(expected[1], runner.loss(), benchmark.precision(impl)) is None


def test_a_row_that_computes_something_else_fails_the_check():
    spec = benchmark.WORKLOADS["bilstm"]
    weights = reference.make_weights(spec)
    data = benchmark.random_batch(4, 6, 0, "bilstm")
    cell = weights["bidirectional_0"]["forward"]
    hidden = cell["recurrent_kernel"].shape[0]
    swapped = {  # gates f and i exchanged: a plausible layout slip
        k: np.concatenate([v[..., hidden : 2 * hidden], v[..., :hidden], v[..., 2 * hidden :]], -1)
        for k, v in cell.items()
    }
    wrong = {**weights, "bidirectional_0": {**weights["bidirectional_0"], "forward": swapped}}
    logits, loss = benchmark.BUILDERS["flax"]("bilstm", data, wrong).check()
    expected = reference.forward(weights, "classifier", data)
    assert "logits differ" in reference.check(expected, logits, loss, "float32")


def test_comparisons_pick_the_fastest_checked_peer_of_the_same_precision():
    def row(impl, ms, checked=True):
        return dict(
            workload="bilstm", length=8, impl=impl, precision=benchmark.precision(impl),
            ms_per_step=ms, checked=checked,
        )  # fmt: skip

    rows = [
        row("lstm_jax", 10.0), row("lstm_jax-lib", 20.0), row("lstm_jax-bf16", 5.0),
        row("torch", 15.0), row("flax", 12.0, checked=False), row("torch-default", 1.0),
        row("torch-bf16", 4.0), row("keras-jax", 30.0),
    ]  # fmt: skip
    found = {(c["precision"], c["comparison"]): c for c in benchmark.comparisons(rows)}
    whole = found["float32", "whole machine"]
    assert (whole["peer"], whole["ratio"]) == ("torch", 1.5)  # flax unchecked, defaults not
    assert found["float32", "library use"]["ratio"] == 0.75
    assert (
        found["bfloat16", "whole machine"]["peer"],
        found["bfloat16", "whole machine"]["ratio"],
    ) == ("torch-bf16", 0.8)
    assert ("bfloat16", "library use") not in found  # lstm_jax-lib-bf16 not timed


def test_unknown_impl_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--impls", "lstm_jax,nonesuch"])
    assert "nonesuch" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_reports_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    impls = "lstm_jax,lstm_jax-lib,jax-cudnn,keras-tf,lstm_jax-pallas,torch,torch-bf16"
    argv = ["--quick", "--workloads", "bilstm,charlm", "--batch", "2", "--impls", impls]
    assert benchmark.main([*argv, "--no-imdb", "--out", str(out)]) == 0

    results = json.loads(out.read_text())
    assert {"date", "command", "machine", "peak", "cells", "comparisons", "imdb"} <= set(results)
    assert results["peak"]["jax_default_gflops"] > 0
    cells = {(r["workload"], r["impl"]): r for r in results["cells"]}
    ours = cells["bilstm", "lstm_jax"]
    assert ours["status"] == "ok" and ours["checked"], ours
    assert (ours["workload"], ours["length"], ours["batch"]) == ("bilstm", 32, 2)
    assert ours["params"] == ours["params_expected"] == 598_209
    assert len(ours["rounds_ms"]) == 1 and ours["ms_per_step"] > 0
    assert ours["recompiles"] == 0
    assert ours["flops"] == benchmark.step_flops("bilstm", 2, 32)
    for key in ("first_step_s", "compile_s", "xla_temp_mb", "rss_mb", "gflops_per_s", "loss0"):
        assert key in ours, key
    lm = cells["charlm", "lstm_jax-lib"]
    assert lm["status"] == "ok" and lm["checked"] and lm["params"] == 3_318_401, lm
    assert lm["settings"]["devices"] == 1
    assert cells["bilstm", "jax-cudnn"]["status"] in ("ok", "skipped")  # skipped without a GPU
    assert cells["bilstm", "lstm_jax-pallas"]["status"] in ("ok", "skipped")  # likewise
    keras_tf = cells["bilstm", "keras-tf"]
    if keras_tf["status"] == "ok":  # with the bench-tf extra: Keras on TensorFlow, same model
        assert keras_tf["params"] == 598_209 and keras_tf["checked"]
    else:  # without it, a skip that says how to install it
        assert keras_tf["status"] == "skipped" and "bench-tf" in keras_tf["reason"], keras_tf
    assert cells["charlm", "keras-tf"]["status"] == "skipped"
    torch = cells["charlm", "torch"]
    if torch["status"] == "ok":  # with the bench extra: checked, at its best, compared
        assert torch["checked"] and torch["settings"]["flush_denormal"], torch
        assert cells["charlm", "torch-bf16"]["settings"]["autocast"] == "bfloat16"
        kinds = {(c["workload"], c["comparison"]) for c in results["comparisons"]}
        assert ("charlm", "library use") in kinds and ("bilstm", "whole machine") in kinds
        assert torch["vs_library"] == torch["ms_per_step"] / lm["ms_per_step"]
    else:
        assert torch["status"] == "skipped" and "bench" in torch["reason"], torch
    assert results["imdb"]["status"] == "skipped"

    table = capsys.readouterr().out
    header = "| " + " | ".join(title for title, _ in benchmark.COLUMNS) + " |"
    assert header in table
    assert "| bilstm | 32 | lstm_jax | 598,209 | float32 | yes |" in table


@pytest.mark.slow
def test_imdb_epochs_on_a_small_archive(tiny_imdb, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--quick", "--workloads", "bilstm", "--batch", "2", "--impls", "lstm_jax,torch"]
    archive = ["--imdb-archive", str(tiny_imdb), "--imdb-epochs", "2"]
    peers = ["--imdb-torch", "reversed,packed"]
    assert benchmark.main([*argv, *archive, *peers, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    imdb = results["imdb"]
    assert imdb["status"] == "ok", imdb
    reviews = len(list(tiny_imdb.glob("aclImdb/train/*/*.txt")))
    assert imdb["examples"] == reviews  # the whole training split, validation slice included
    assert len(imdb["epochs_s"]) == 2 and imdb["epoch_s"] == imdb["epochs_s"][1] > 0
    assert imdb["recompiles"] == 0 and 0.0 <= imdb["padding_fraction"] < 1.0
    assert imdb["matmul_dtype"] == "float32"  # the main job's config as it is
    table = capsys.readouterr().out
    assert "IMDB epoch (bilstm, main job config)" in table
    torch_installed = results["cells"][1]["status"] != "skipped"
    if torch_installed:  # the same reviews in PyTorch, in both layouts
        reversed_, packed = results["imdb_torch"]
        for peer, layout in ((reversed_, "reversed"), (packed, "packed")):
            assert peer["status"] == "ok" and peer["settings"]["layout"] == layout, peer
            assert peer["examples"] == reviews and len(peer["epochs_s"]) == 2
            assert peer["ours_vs_torch"] == imdb["reviews_per_s"] / peer["reviews_per_s"]
        assert "The same batches in PyTorch (reversed, " in table


@pytest.mark.slow
def test_imdb_epochs_with_bfloat16_matmul_inputs(tiny_imdb, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--quick", "--workloads", "bilstm", "--batch", "2", "--impls", "lstm_jax"]
    archive = ["--imdb-archive", str(tiny_imdb), "--imdb-epochs", "1"]
    dtype = ["--imdb-matmul-dtype", "bfloat16"]
    assert benchmark.main([*argv, *archive, *dtype, "--out", str(out)]) == 0
    imdb = json.loads(out.read_text())["imdb"]
    assert imdb["status"] == "ok" and imdb["matmul_dtype"] == "bfloat16", imdb
    assert "main job config, bfloat16 matmul inputs" in capsys.readouterr().out


def test_workers_get_one_malloc_arena_but_keras_tf(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    one = "glibc.malloc.arena_max=1"
    assert benchmark._worker_env("torch")["GLIBC_TUNABLES"] == one
    assert benchmark._worker_env("lstm_jax")["GLIBC_TUNABLES"] == one
    assert "GLIBC_TUNABLES" not in benchmark._worker_env("keras-tf")
    assert "GLIBC_TUNABLES" not in benchmark._worker_env("torch", malloc="default")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")  # a user's own stays
    assert benchmark._worker_env("torch")["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=4"


@pytest.mark.slow
def test_the_library_is_imported_only_by_its_workers():
    import subprocess
    import sys

    script = (
        "import sys, benchmarks.harness; print('lstm_jax' in sys.modules, 'jax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_imdb_epochs_must_be_positive():
    with pytest.raises(ValueError, match="--imdb-epochs must be at least 1"):
        benchmark.main(["--quick", "--imdb-epochs", "0", "--no-imdb"])


@pytest.mark.parametrize("workload", ["bilstm", "stacked"])
def test_torch_layouts_agree_on_rows_of_unequal_lengths(workload):
    """The reference check runs full-length rows; here the padding-correct PyTorch layouts
    (packed, and each row's real steps reversed in place) agree where rows differ."""
    torch = pytest.importorskip("torch")
    spec = benchmark.WORKLOADS[workload]
    weights = reference.make_weights(spec)
    data = benchmark.random_batch(5, 9, 2, workload)
    lengths = np.array([9, 1, 4, 7, 2])
    tokens = np.where(np.arange(9) < lengths[:, None], data["tokens"], 0)
    logits = {}
    for layout in ("packed", "reversed", "padded"):
        model = benchmark.torch_model(torch, spec, layout=layout)
        benchmark.load_torch(model, weights, spec, torch, layout)
        with torch.no_grad():
            out = model(torch.from_numpy(tokens).long(), torch.from_numpy(lengths).long())
        logits[layout] = out.numpy()
    np.testing.assert_allclose(logits["reversed"], logits["packed"], atol=1e-5)
    assert np.abs(logits["padded"] - logits["packed"]).max() > 1e-3  # padding read as input
    full = {**data, "lengths": np.full(5, 9)}
    expected, _ = reference.forward(weights, "classifier", full)
    np.testing.assert_allclose(logits["packed"][0], expected[0], atol=1e-5)  # the full row


def test_the_gpu_layer_probe_times_the_same_computation_everywhere():
    """`benchmarks/gpu_kernels.py` reports each row's loss beside its time; off a GPU its
    cuDNN row's weight packing runs through `jax.experimental.rnn.lstm_ref` and PyTorch on
    the CPU, and both give the fused loop's loss on the same weights and inputs."""
    import jax.numpy as jnp

    from benchmarks import gpu_kernels

    params, xs, _ = gpu_kernels.inputs(16, 7)
    full = jnp.ones(xs.shape[:2], bool)
    loop = float(gpu_kernels.loss_step("loop", None)(params, xs, full)[0])
    cudnn_layout = gpu_kernels._jax_cudnn(params, xs, 16, reference=True)()
    assert cudnn_layout == pytest.approx(loop, rel=1e-5)
    pytest.importorskip("torch")
    assert gpu_kernels._torch(params, xs, 16, bf16=False, device="cpu")() == pytest.approx(
        loop, rel=1e-5
    )
