"""The real data (`-m data`; `.ci/run` points it at ../shared/data): the IMDB archive's
layout and the command end to end on a sample of it, in a fresh process as a user runs
it; the three real series as the forecasting configs read them, and one of them trained."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_jax import configs
from lstm_jax.tasks.forecasting import series as series_lib
from lstm_jax.tasks.sentiment import data

pytestmark = pytest.mark.data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT = SHARED / "aclImdb_labeled.tar.gz"
SERIES = Path(os.environ.get("LSTM_JAX_TIMESERIES") or SHARED / "timeseries")


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


def _series(config_name: str) -> series_lib.Series:
    config = configs.get(config_name)
    path = SERIES / Path(config.csv).name
    if not path.exists():
        pytest.skip(f"no series at {path}")
    features = [f for f in config.features.split(",") if f]
    return series_lib.read_csv(
        path, time_column=config.time_column, target=config.target, features=features
    )


def test_beijing_pm25_reads_with_its_gaps_and_one_hot_wind():
    series = _series("forecast_pm25")
    assert len(series) == 43_824 and series.freq in ("h", "1h")
    target = series.values[:, 0]
    assert round(np.isnan(target).mean(), 3) == 0.047  # pm2.5 missing in 4.7% of hours
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, np.isnan(target), 0])))[::2]
    assert runs.max() == 155  # missing hours in the longest gap (156 h between readings)
    assert sum(c.startswith("cbwd") for c in series.columns) == 4  # NE, NW, SE, cv


def test_melbourne_and_zurich_read_on_their_calendars():
    melbourne = _series("forecast_min_temp")
    assert len(melbourne) == 3_652  # 3,650 rows and the two missing 31 Decembers
    assert np.isnan(melbourne.values[:, 0]).sum() == 2
    sunspots = _series("forecast_sunspots")
    assert len(sunspots) == 2_820 and not np.isnan(sunspots.values).any()


def test_the_forecast_command_trains_on_a_real_series(tmp_path):
    path = SERIES / "zurich_monthly_sunspots.csv"
    if not path.exists():
        pytest.skip(f"no series at {path}")
    command = [sys.executable, "-m", "lstm_jax.cli"]
    env = {**os.environ, "LSTM_JAX_COMPILATION_CACHE": str(tmp_path / "xla")}
    run = ["--workdir", str(tmp_path / "run")]
    train = [*command, "train", "--config", "forecast_sunspots", *run, "--csv", str(path)]
    done = subprocess.run(
        [*train, "--quiet", "--epochs", "3"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    mae = json.loads(done.stdout)["test_mae_by_model"]
    assert mae["lstm_jax"] < mae["persistence"]  # three epochs already beat the last value
    done = subprocess.run([*command, "forecast", *run], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| 1984-") == 12  # the year after the file's last month
