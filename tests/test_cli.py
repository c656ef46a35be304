"""The `lstm-jax` command: flags checked as they are parsed, the run directory's UX
(resume alone, contradicting options, damaged files), predictions' echo, clear errors."""

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from toy_task import ToyConfig, ToyTask

from lstm_jax import cli, configs, host, tasks, train
from lstm_jax.tasks.sentiment import SentimentConfig

SMALL = ["--vocab-size", "300", "--batch-size", "16", "--val-fraction", "0.25"]


@pytest.fixture(scope="module")
def cli_run(tiny_imdb, tmp_path_factory):
    """A run trained by the command, with options that differ from the config's."""
    workdir = tmp_path_factory.mktemp("cli_run")
    argv = ["train", "--workdir", str(workdir), "--data", str(tiny_imdb), "--quiet"]
    assert cli.main([*argv, *SMALL, "--epochs", "1", "--max-len", "48"]) == 0
    return workdir


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate", "nan"], "--learning-rate: must be a finite number, got 'nan'"),
        (["--learning-rate", "inf"], "must be a finite number"),
        (["--learning-rate", "0"], r"learning_rate must lie in \(0, inf\)"),
        (["--epochs", "0"], r"epochs must lie in \[1, inf\)"),
        (["--epochs", "two"], "--epochs: not an integer: 'two'"),
        (["--dropout", "1.5"], r"dropout must lie in \[0, 1\)"),
        (["--engine", "cudnn"], "--engine: invalid choice"),
        (["--matmul-dtype", "float16"], "--matmul-dtype: invalid choice"),
        (["--config", "imdb_nonesuch"], "unknown config 'imdb_nonesuch'"),
    ],
)
def test_bad_train_options_are_refused_as_parsed(flags, message, tmp_path, capsys):
    err = _usage_error(["train", "--workdir", str(tmp_path), *flags], capsys)
    assert re.search(message, err), err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_every_config_field_is_a_train_flag():
    parser = cli.build_parser()
    config = SentimentConfig(max_len=7, max_train_examples=9)
    for name, value in config.to_dict().items():
        if name == "task":
            continue
        flag = "--" + name.replace("_", "-")
        given = (
            [flag if value else "--no-" + flag[2:]]
            if isinstance(value, bool)
            else [flag, str(value)]
        )
        args = parser.parse_args(["train", "--workdir", "x", *given])
        assert cli._overrides(args) == {name: value}, name


@pytest.mark.parametrize("name", [None, "imdb_stacked", "charlm_quick"])
def test_train_help_shows_the_values_of_the_named_config(name, capsys):
    """`train --help` gives each field's value in the experiment `--config` names (the
    default experiment without it), and a foreign task's field its own default."""
    shown = name or configs.DEFAULT
    config = configs.get(shown)
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", *(["--config", name] if name else []), "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # the help, unwrapped
    assert f"passes over the training split ({shown}: {config.epochs})" in text
    assert f"word and output dropout rate ({shown}: {config.dropout})" in text
    if config.task == "sentiment":
        assert "characters per training window (BPTT length) (default 128) [charlm]" in text
    else:
        assert f"({shown}: {config.window})" in text


def test_a_flag_foreign_to_the_task_is_an_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(tasks.TASKS, "toy", (ToyConfig, ToyTask))
    err = _usage_error(["train", "--workdir", str(tmp_path), "--hidden", "3"], capsys)
    assert "--hidden is not a field of the 'sentiment' task's config" in err


def test_resume_alone_takes_the_saved_config(cli_run, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(train, "fit", lambda task, *a, **k: seen.append(task.config) or {})
    assert cli.main(["train", "--workdir", str(cli_run), "--resume", "--quiet"]) == 0
    saved = tasks.load_config(cli_run)
    assert seen == [saved] and saved.max_len == 48 and saved.epochs == 1
    assert saved != configs.get("imdb_bilstm")


def test_options_that_contradict_the_saved_config_are_named(cli_run, capsys):
    argv = ["train", "--workdir", str(cli_run), "--resume", "--epochs", "3"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "epochs: saved 1, asked 3" in err and "max_len" not in err


def test_a_finished_run_resumed_alone_gives_its_results(cli_run, capsys):
    assert cli.main(["train", "--workdir", str(cli_run), "--resume", "--quiet"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results == json.loads((cli_run / "results.json").read_text())


def test_evaluate_and_predict_read_the_run(cli_run, tiny_imdb, capsys):
    assert cli.main(["evaluate", "--workdir", str(cli_run), "--data", str(tiny_imdb)]) == 0
    shown = json.loads(capsys.readouterr().out)
    results = json.loads((cli_run / "results.json").read_text())
    assert shown["accuracy"] == pytest.approx(results["test_accuracy"])
    review = "great film. " * 5000  # a 60 kB review
    assert cli.main(["predict", "--workdir", str(cli_run), "--show-padding", review]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and len(lines[0]) < 100 and lines[0].endswith("...")
    assert "without padding" in lines[1] and "with 1000 pad tokens" in lines[2]


def test_version_is_the_installed_distributions_and_types_are_shipped(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"lstm-jax {importlib.metadata.version('lstm-jax')}\n"
    assert (Path(cli.__file__).parent / "py.typed").is_file()  # PEP 561: the hints are for users


def test_a_damaged_config_file_is_named(tmp_path, capsys):
    (tmp_path / "config.json").write_text("")
    assert cli.main(["evaluate", "--workdir", str(tmp_path)]) == 2
    assert f"{tmp_path / 'config.json'} is not valid JSON" in capsys.readouterr().err
    err = _usage_error(["train", "--workdir", str(tmp_path), "--resume"], capsys)
    assert "config.json is not valid JSON" in err
    (tmp_path / "config.json").write_text('{"task": "sentiment", "modle": "bilstm"}')
    assert cli.main(["predict", "--workdir", str(tmp_path), "hi"]) == 2
    err = capsys.readouterr().err
    assert "unknown field(s) ['modle']" in err and "Traceback" not in err


def test_a_failure_not_written_for_users_shows_its_traceback(monkeypatch, capsys):
    def broken(cpu_devices=None):
        return len(cpu_devices)  # a bug: TypeError from an operation, not a message

    monkeypatch.setattr(host, "configure", broken)
    assert cli.main(["summary"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "in broken" in err
    assert err.endswith("lstm-jax summary: error: object of type 'NoneType' has no len()\n")


@pytest.mark.slow
def test_output_its_reader_stopped_reading_ends_the_command_quietly():
    code = (
        "import sys; from lstm_jax import cli; "
        "cli.host.configure = lambda cpu_devices=None: print('x' * 1_000_000); "
        "sys.exit(cli.main(['summary']))"
    )
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with subprocess.Popen([sys.executable, "-c", code], **pipes) as child:
        child.stdout.close()  # the reader is gone, as after `| head` has its lines
        err = child.stderr.read()
    assert child.returncode == 141 and err == b""  # 128 + SIGPIPE, no error, no traceback


def test_a_workdir_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run").write_text("notes")
    argv = ["train", "--workdir", str(tmp_path / "run"), "--data", "/data/imdb.tgz", "--quiet"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        f"lstm-jax train: error: {tmp_path / 'run'} is a file; give a directory for the run\n"
    )
    assert (tmp_path / "run").read_text() == "notes"


def test_an_interrupted_run_says_how_to_resume(monkeypatch, tmp_path, capsys):
    def interrupted(task, workdir, **kwargs):
        raise train.Interrupted(7, Path(workdir))

    monkeypatch.setattr(train, "fit", interrupted)
    argv = ["train", "--workdir", str(tmp_path), "--data", "/data/imdb.tgz", "--quiet"]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert f"lstm-jax train --workdir {tmp_path} --resume --data /data/imdb.tgz" in err


def test_a_missing_archive_is_a_clear_error(tmp_path, capsys):
    argv = ["train", "--workdir", str(tmp_path / "run"), "--quiet"]
    assert cli.main([*argv, "--data", str(tmp_path / "missing.tar.gz")]) == 2
    assert "aclImdb/{train,test}/{pos,neg}" in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


def test_every_command_uses_the_compilation_cache(monkeypatch, capsys):
    used = []
    monkeypatch.setattr(host, "configure", lambda cpu_devices=None: 2)
    monkeypatch.setattr(host, "use_compilation_cache", lambda: used.append(True))
    assert cli.main(["summary"]) == 0
    assert used == [True] and "Total params: 598,209" in capsys.readouterr().out


def test_ctrl_c_outside_the_training_loop_ends_without_a_traceback(monkeypatch, capsys):
    def interrupted(cpu_devices=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(host, "configure", interrupted)
    assert cli.main(["summary"]) == 130
    assert capsys.readouterr().err == "lstm-jax summary: interrupted\n"


def test_sigterm_outside_the_training_loop_ends_the_command_cleanly(monkeypatch, capsys):
    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(host, "tune_malloc", lambda: True)
    monkeypatch.setattr(sys, "argv", ["lstm-jax", "summary"])

    def terminated(cpu_devices=None):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(host, "configure", terminated)
    with pytest.raises(SystemExit) as stop:
        cli.entry()
    assert stop.value.code == 143
    assert capsys.readouterr().err == "lstm-jax summary: terminated\n"
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is the command's alone


def test_cpu_devices_must_be_positive(capsys):
    assert "--cpu-devices: must be at least 1" in _usage_error(
        ["--cpu-devices", "0", "summary"], capsys
    )


@pytest.mark.parametrize("value, tuned", [(None, True), ("tuned", True), ("default", False)])
def test_the_command_tunes_malloc_unless_told_not_to(value, tuned, monkeypatch):
    calls = []
    monkeypatch.setattr(host, "tune_malloc", lambda: calls.append(True) or True)
    monkeypatch.setattr(cli, "main", lambda argv: 0)
    if value is None:
        monkeypatch.delenv(host.ENV_MALLOC, raising=False)
    else:
        monkeypatch.setenv(host.ENV_MALLOC, value)
    with pytest.raises(SystemExit) as stop:
        cli.entry()
    assert stop.value.code == 0 and calls == ([True] if tuned else [])


def test_a_bad_malloc_choice_is_refused_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setattr(host, "tune_malloc", lambda: pytest.fail("tuned anyway"))
    monkeypatch.setattr(cli, "main", lambda argv: pytest.fail("ran anyway"))
    monkeypatch.setenv(host.ENV_MALLOC, "jemalloc")
    with pytest.raises(SystemExit) as stop:
        cli.entry()
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "$LSTM_JAX_MALLOC must be 'tuned'" in err and "'jemalloc'" in err
