"""The real IMDB archive (`-m data`; `.ci/run` points it at ../shared/data): its layout,
and the command end to end on a sample of it, in a fresh process as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_jax.tasks.sentiment import data

pytestmark = pytest.mark.data

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "aclImdb_labeled.tar.gz"


@pytest.fixture(scope="module")
def archive() -> Path:
    path = Path(os.environ.get(data.ARCHIVE_ENV) or DEFAULT)
    if not path.exists():
        pytest.skip(f"no IMDB archive at {path}")
    return path


def test_real_archive_has_25000_balanced_reviews_per_split(archive):
    splits = data.load_imdb(archive)
    for split in splits.values():
        assert len(split) == 25_000
        np.testing.assert_array_equal(np.bincount(split.labels), [12_500, 12_500])
        assert all(split.texts)


def test_the_command_trains_and_predicts_on_a_sample(archive, tmp_path):
    command = [sys.executable, "-m", "lstm_jax.cli"]
    env = {**os.environ, "LSTM_JAX_COMPILATION_CACHE": str(tmp_path / "xla")}
    sample = ["--max-train-examples", "4000", "--max-len", "128", "--epochs", "2"]
    train = [*command, "train", "--workdir", str(tmp_path / "run"), "--data", str(archive)]
    done = subprocess.run([*train, "--quiet", *sample], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert results["test_accuracy"] > 0.65  # two epochs on 4,000 reviews, all 25,000 tested
    texts = ["The best film I have seen this year.", "A dull, badly acted mess."]
    predict = [*command, "predict", "--workdir", str(tmp_path / "run"), *texts]
    done = subprocess.run(predict, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = (float(line.split()[0]) for line in done.stdout.splitlines())
    assert first > second
