"""The README's Python blocks run as written: the API tour here, the training example on
the real data (`-m data`), so the README cannot drift from the library."""

import os
import re
from pathlib import Path

import pytest

from lstm_jax.tasks.sentiment import data

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
README_ARCHIVE = "../shared/data/aclImdb_labeled.tar.gz"  # relative to the repository


def _run(code: str, name: str) -> dict:
    namespace: dict = {}
    exec(compile(code, f"README.md ({name})", "exec"), namespace)
    return namespace


def test_the_readme_has_its_two_python_blocks():
    assert len(BLOCKS) == 2 and "cells.lstm_cell" in BLOCKS[0] and "fit(" in BLOCKS[1]


def test_the_api_tour_runs():
    tour = _run(BLOCKS[0], "API tour")
    assert tour["ys"].shape == (2, 5, 32) and tour["logits"].shape == (2,)


@pytest.mark.data
def test_the_training_example_runs_on_the_real_data(tmp_path, monkeypatch, capsys):
    archive = Path(os.environ.get(data.ARCHIVE_ENV) or README.parent / README_ARCHIVE)
    if not archive.exists():
        pytest.skip(f"no IMDB archive at {archive}")
    assert README_ARCHIVE in BLOCKS[1]
    monkeypatch.chdir(tmp_path)  # its run directory, runs/demo, is relative
    example = _run(BLOCKS[1].replace(README_ARCHIVE, str(archive)), "training example")
    assert example["results"]["epochs"] == 2 and (tmp_path / "runs/demo/best").is_dir()
    assert 0.0 < float(capsys.readouterr().out.split()[-1]) < 1.0
