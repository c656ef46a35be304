"""The benchmark harness (`benchmarks/`, outside the package): its counting, options and
what its workers report on a tiny workload (the slower tier). Timings are never asserted."""

import json

import pytest

from benchmarks import harness as benchmark


def test_flop_count_follows_the_documented_formula():
    # bilstm: one bidirectional layer, E = H = 64: 3 * 2 * 2*B*T*(64+64)*4*64.
    assert benchmark.step_flops("bilstm", 2, 3) == 3 * 2 * 2 * 2 * 3 * 128 * 256
    # stacked adds a layer over the first one's 128 outputs with H = 32.
    extra = 3 * 2 * 2 * 2 * 3 * (128 + 32) * 4 * 32
    assert benchmark.step_flops("stacked", 2, 3) == benchmark.step_flops("bilstm", 2, 3) + extra


def test_expected_params_match_the_keras_summaries():
    assert benchmark.expected_params("bilstm") == 598_209
    assert benchmark.expected_params("stacked") == 635_329


def test_unknown_impl_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--impls", "lstm_jax,nonesuch"])
    assert "nonesuch" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_reports_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    impls = "lstm_jax,jax-cudnn,keras-tf,lstm_jax-pallas"
    argv = ["--quick", "--workloads", "bilstm", "--batch", "2", "--impls", impls]
    assert benchmark.main([*argv, "--no-imdb", "--out", str(out)]) == 0

    results = json.loads(out.read_text())
    assert {"date", "command", "machine", "peak", "cells", "imdb"} <= set(results)
    assert results["peak"]["jax_default_gflops"] > 0
    ours, cudnn, keras_tf, pallas = results["cells"]
    assert ours["impl"] == "lstm_jax" and ours["status"] == "ok", ours
    assert (ours["workload"], ours["length"], ours["batch"]) == ("bilstm", 32, 2)
    assert ours["params"] == ours["params_expected"] == 598_209
    assert len(ours["rounds_ms"]) == 1 and ours["ms_per_step"] > 0
    assert ours["recompiles"] == 0
    assert ours["flops"] == benchmark.step_flops("bilstm", 2, 32)
    for key in ("first_step_s", "compile_s", "xla_temp_mb", "rss_mb", "gflops_per_s", "loss0"):
        assert key in ours, key
    assert cudnn["status"] in ("ok", "skipped")  # skipped without a GPU
    assert pallas["status"] in ("ok", "skipped")  # likewise
    if keras_tf["status"] == "ok":  # with the bench-tf extra: Keras on TensorFlow, same model
        assert keras_tf["params"] == 598_209 and keras_tf["ms_per_step"] > 0
    else:  # without it, a skip that says how to install it
        assert keras_tf["status"] == "skipped" and "bench-tf" in keras_tf["reason"], keras_tf
    assert results["imdb"]["status"] == "skipped"

    table = capsys.readouterr().out
    header = "| " + " | ".join(title for title, _ in benchmark.COLUMNS) + " |"
    assert header in table
    assert "| bilstm | 32 | lstm_jax | 598,209 |" in table


@pytest.mark.slow
def test_imdb_epochs_on_a_small_archive(tiny_imdb, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--quick", "--workloads", "bilstm", "--batch", "2", "--impls", "lstm_jax"]
    archive = ["--imdb-archive", str(tiny_imdb), "--imdb-epochs", "2"]
    assert benchmark.main([*argv, *archive, "--out", str(out)]) == 0
    imdb = json.loads(out.read_text())["imdb"]
    assert imdb["status"] == "ok", imdb
    reviews = len(list(tiny_imdb.glob("aclImdb/train/*/*.txt")))
    assert imdb["examples"] == reviews  # the whole training split, validation slice included
    assert len(imdb["epochs_s"]) == 2 and imdb["epoch_s"] == imdb["epochs_s"][1] > 0
    assert imdb["recompiles"] == 0 and 0.0 <= imdb["padding_fraction"] < 1.0
    assert imdb["matmul_dtype"] == "float32"  # the main job's config as it is
    assert "IMDB epoch (bilstm, main job config)" in capsys.readouterr().out


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
