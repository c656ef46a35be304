"""Forecasting on small series made here: CSV checks, gaps, windows, the scaler, baselines
against hand computations, the forecaster, a tiny fit, the command, every config field."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import cli, train
from lstm_jax.models import Forecaster
from lstm_jax.tasks.errors import DataError
from lstm_jax.tasks.forecasting import ForecastConfig, ForecastTask, baselines
from lstm_jax.tasks.forecasting import series as S

TINY = ForecastConfig(
    synthetic_length=400,
    input_width=12,
    horizon=4,
    season=24,
    hidden=8,
    batch_size=32,
    epochs=2,
    learning_rate=1e-2,
)


def _csv(tmp_path, text, name="s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


HOURLY = "time,y,wind,temp\n" + "".join(
    f"2020-01-01 {h:02d}:00,{h % 5},{'NW' if h % 3 else 'SE'},{20 - h}\n" for h in range(24)
)


# ----------------------------------------------------------------------------------
# Reading a CSV.
# ----------------------------------------------------------------------------------
def test_a_csv_reads_with_one_hot_categories_and_a_regular_step(tmp_path):
    s = S.read_csv(
        _csv(tmp_path, HOURLY), time_column="time", target="y", features=["wind", "temp"]
    )
    assert s.columns == ["y", "wind=NW", "wind=SE", "temp"] and s.freq == "h"
    assert s.values.shape == (24, 4)
    np.testing.assert_array_equal(s.values[:3, 1:3], [[0, 1], [1, 0], [1, 0]])
    assert str(s.future(2)[0])[:16] == "2020-01-02T00:00"


def test_missing_timestamps_become_missing_rows_and_parts_make_a_timestamp(tmp_path):
    text = "year,month,day,hour,v\n2020,1,1,0,1\n2020,1,1,1,2\n2020,1,1,3,4\n2020,1,1,4,5\n"
    s = S.read_csv(_csv(tmp_path, text), time_column="year,month,day,hour", target="v")
    assert len(s) == 5 and s.missing_rows == 1 and np.isnan(s.values[2, 0])
    monthly = '"Month","x"\n"1749-01",1\n"1749-02",2\n"1749-03",3\n'
    m = S.read_csv(_csv(tmp_path, monthly, "m.csv"), time_column="Month", target="x")
    assert m.freq == "MS" and str(m.future(1)[0])[:10] == "1749-04-01"


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        ("t,y\n2020-01-01,1\n", {"target": "z"}, r"no column 'z'; the columns are \['t', 'y'\]"),
        ("t,y\n2020-01-01,1\n2020-01-02,x\n", {}, r"column 'y', row 3: 'x' is not a number"),
        ("t,y\n2020-01-02,1\n2020-01-01,2\n", {}, r"row 3 \(2020-01-01.*sort the file by time"),
        ("t,y\n2020-01-01,1\n2020-01-01,2\n", {}, "row 3 repeats the timestamp"),
        ("t,y\n2020-01-01,1\n2020-01-02,2\nnot a date,3\n", {}, "do not parse as timestamps"),
        ("t,y\n2020-01-01,\n2020-01-02,\n", {}, "the target 'y' has no value in any row"),
        ("t,y\n2020-01-01 00:00,1\n2020-01-01 01:00,2\n2020-01-01 01:30,3\n2020-01-01 02:30,3\n",
         {}, r"row 4 .* off the series' regular step"),
    ],
)  # fmt: skip
def test_bad_csvs_name_the_file_column_and_row(tmp_path, text, options, message):
    path = _csv(tmp_path, text)
    with pytest.raises(DataError, match=message) as error:
        S.read_csv(path, **{"time_column": "t", "target": "y", **options})
    assert str(path) in str(error.value)


def test_a_missing_file_says_how_to_give_one(tmp_path):
    with pytest.raises(DataError, match="no such file; pass the CSV with --csv"):
        S.read_csv(tmp_path / "none.csv", time_column="t", target="y")


def test_a_series_too_short_for_one_window_is_an_error(tmp_path):
    text = "t,y\n" + "".join(f"2020-01-{d:02d},{d}\n" for d in range(1, 11))
    config = TINY.replace(csv=str(_csv(tmp_path, text)), time_column="t", target="y")
    with pytest.raises(DataError, match=r"holds no window of 16 steps"):
        ForecastTask(config).prepare(tmp_path)


# ----------------------------------------------------------------------------------
# Gaps, windows, the scaler.
# ----------------------------------------------------------------------------------
def test_short_gaps_are_interpolated_and_long_ones_left():
    values = np.array([1, np.nan, 3, np.nan, np.nan, np.nan, 7, np.nan], dtype=float)[:, None]
    filled, counts = S.fill_gaps(values, max_gap=2)
    np.testing.assert_array_equal(filled[:3, 0], [1, 2, 3])
    assert np.isnan(filled[3:6, 0]).all() and np.isnan(filled[7, 0])  # too long; at the end
    assert counts == {"missing": 5, "filled": 1, "left": 4}


def test_windows_avoid_missing_rows_and_stay_inside_their_part():
    usable = np.ones(20, bool)
    usable[9] = False
    starts = S.window_starts(usable, 2, 18, size=4)
    assert starts.tolist() == [2, 3, 4, 5, 10, 11, 12, 13, 14]
    assert S.window_starts(usable, 2, 18, size=4, stride=3).tolist() == [2, 5, 11, 14]


def test_gathered_windows_are_the_slices_of_the_series():
    values = np.arange(30.0).reshape(15, 2)
    got = S.windows(values, np.array([0, 7]), 5)
    assert got.shape == (2, 5, 2)
    np.testing.assert_array_equal(got[1], values[7:12])


def test_the_scaler_sees_only_the_training_part(tmp_path):
    task = ForecastTask(TINY)
    task.prepare(tmp_path)
    train_end = task.bounds[0]
    np.testing.assert_allclose(task.scaler.mean[0], task.filled[:train_end, 0].mean())
    assert task.scaler.mean[0] < task.filled[:, 0].mean()  # the trend: later values higher
    assert (tmp_path / "scaler.json").is_file()


# ----------------------------------------------------------------------------------
# Baselines.
# ----------------------------------------------------------------------------------
def test_naive_baselines_by_hand():
    target = np.arange(10.0) ** 2
    origins = np.array([6, 8])
    np.testing.assert_array_equal(baselines.persistence(target, origins, 2), [[25, 25], [49, 49]])
    # season 2, horizon 3: steps 1-2 one season back, step 3 two seasons back
    np.testing.assert_array_equal(
        baselines.seasonal_naive(target, origins, 3, 2), [[16, 25, 16], [36, 49, 36]]
    )
    np.testing.assert_array_equal(baselines.moving_average(target, origins, 1, 2), [[20.5], [42.5]])


def test_linear_regression_recovers_a_linear_rule():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3, 2))
    y = np.stack([x[:, -1, 0] * 2 + 1, x[:, 0, 1] - 3], axis=1)
    np.testing.assert_allclose(baselines.linear(x, y, x[:5], ridge=0.0), y[:5], atol=1e-8)


def test_ets_from_the_end_of_training_is_statsmodels_own_forecast():
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    target = S.synthetic(300, 0, season=12).values[:, 0]
    ours = baselines.ets(target, 200, np.array([200]), 5, 12)[0]
    fitted = ExponentialSmoothing(
        target[:200], trend="add", damped_trend=True, seasonal="add", seasonal_periods=12,
        initialization_method="heuristic",
    ).fit()  # fmt: skip
    np.testing.assert_allclose(ours, fitted.forecast(5), rtol=1e-8)


# ----------------------------------------------------------------------------------
# The forecaster.
# ----------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", ["direct", "autoregressive"])
def test_forecaster_shapes_and_steps(decoder):
    model = Forecaster(horizon=4, hidden=6, layers=2, decoder=decoder)
    xs = jax.random.normal(jax.random.key(0), (3, 7, 2))
    params = model.init(jax.random.key(1), xs)
    assert model.apply(params, xs).shape == (3, 4)
    assert model.apply(params, xs, steps=2).shape == (3, 2)
    if decoder == "direct":
        with pytest.raises(ValueError, match="at most its horizon"):
            model.apply(params, xs, steps=5)
    else:
        assert model.apply(params, xs, steps=9).shape == (3, 9)


def test_a_relative_forecaster_that_outputs_zero_is_persistence():
    model = Forecaster(horizon=3, hidden=4)
    xs = jax.random.normal(jax.random.key(0), (2, 5, 1))
    params = model.init(jax.random.key(1), xs)["params"]
    params = jax.tree.map(jnp.zeros_like, params)  # every output of the head: 0
    np.testing.assert_array_equal(
        model.apply({"params": params}, xs), jnp.repeat(xs[:, -1, :1], 3, axis=1)
    )


# ----------------------------------------------------------------------------------
# A tiny run, the command.
# ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("forecast")
    results = train.fit(ForecastTask(TINY), workdir, progress=False)
    return workdir, results


def test_a_tiny_run_compares_with_the_baselines(tiny_run):
    workdir, results = tiny_run
    comparison = json.loads((workdir / "comparison.json").read_text())
    models = comparison["models"]
    assert set(models) == {"lstm_jax", *baselines.NAMES}
    assert comparison["horizon"] == 4 and len(models["persistence"]["mae_by_step"]) == 4
    assert results["test_mae_by_model"]["lstm_jax"] == pytest.approx(results["test_mae"])
    assert results["test_rmse"] == pytest.approx(models["lstm_jax"]["rmse"], rel=1e-5)
    assert (workdir / "forecast.png").stat().st_size > 1000


def test_the_command_forecasts_after_the_end_and_evaluates(tiny_run, capsys):
    workdir, results = tiny_run
    assert cli.main(["forecast", "--workdir", str(workdir), "--horizon", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("| 2000-") == 3 and (workdir / "forecast_future.png").is_file()
    assert cli.main(["forecast", "--workdir", str(workdir), "--horizon", "5"]) == 2
    assert "at most its horizon (4)" in capsys.readouterr().err
    assert cli.main(["evaluate", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "| model | MAE | RMSE |" in out and "| persistence |" in out
    assert json.loads(out.split("\n\n")[0])["mae"] == pytest.approx(results["test_mae"])


# ----------------------------------------------------------------------------------
# Every config field reaches what it controls.
# ----------------------------------------------------------------------------------
CSV_TEXT = "date,y,kind\n" + "".join(
    f"2020-01-{1 + d // 24:02d} {d % 24:02d}:00,{(d % 7) * 1.5 + d / 50:.3f},{'ab'[d % 2]}\n"
    for d in range(24 * 20)
)


def _prepared(tmp_path, **changes):
    path = _csv(tmp_path, CSV_TEXT, "fields.csv")
    config = TINY.replace(csv=str(path), time_column="date", target="y", **changes)
    task = ForecastTask(config)
    (tmp_path / "run").mkdir(exist_ok=True)
    task.prepare(tmp_path / "run")
    return task


def _params(task):
    return task.init_params(jax.random.key(0))


def _shape_of(tree, name):
    return jax.tree.map(jnp.shape, tree)[name]


CHECKS = {
    "csv": lambda t, p: len(_prepared(p).series) == 480,
    "time_column": lambda t, p: _prepared(p).series.freq == "h",
    "target": lambda t, p: _prepared(p).series.columns[0] == "y",
    "features": lambda t, p: (
        _prepared(p, features="kind").series.columns == ["y", "kind=a", "kind=b"]
    ),
    "step": lambda t, p: len(_prepared(p, step="30min").series) == 959,
    "max_gap": lambda t, p: (
        S.fill_gaps(np.array([[1.0], [np.nan], [3.0]]), 0)[1]["filled"] == 0
        and _prepared(p, max_gap=0).config.max_gap == 0
    ),
    "input_width": lambda t, p: _prepared(p, input_width=5).batches("test")[0].xs.shape[1] == 5,
    "horizon": lambda t, p: _prepared(p, horizon=3).batches("test")[0].ys.shape[1] == 3,
    "stride": lambda t, p: (
        len(_prepared(p, stride=2).starts["train"]) == -(-len(_prepared(p).starts["train"]) // 2)
    ),
    "train_fraction": lambda t, p: _prepared(p, train_fraction=0.5).bounds[0] == 240,
    "val_fraction": lambda t, p: _prepared(p, val_fraction=0.1).bounds == (336, 384),
    "season": lambda t, p: True,  # checked by the baselines' tests with other seasons
    "cell": lambda t, p: (
        _shape_of(_params(_prepared(p, cell="gru")), "layer_0")["kernel"] == (2, 24)
    ),
    "hidden": lambda t, p: (
        _shape_of(_params(_prepared(p, hidden=5)), "layer_0")["kernel"] == (2, 20)
    ),
    "layers": lambda t, p: "layer_1" in _params(_prepared(p, layers=2)),
    "decoder": lambda t, p: "decoder" in _params(_prepared(p, decoder="autoregressive")),
    "dropout": lambda t, p: (
        _varies_with_rng(_prepared(p, dropout=0.5)) and not _varies_with_rng(_prepared(p))
    ),
    "relative": lambda t, p: (
        _shape_of(_params(_prepared(p, relative=False)), "layer_0")["kernel"][0] == 1
    ),
    "keep_level": lambda t, p: (
        _shape_of(_params(_prepared(p, keep_level=False)), "layer_0")["kernel"][0] == 1
    ),
    "calendar": lambda t, p: (
        _prepared(p, calendar=True).series.columns[1:]
        == ["hour_sin", "hour_cos", "weekday_sin", "weekday_cos", "yearday_sin", "yearday_cos"]
    ),
    "loss": lambda t, p: _loss(_prepared(p, loss="mae")) != _loss(_prepared(p)),
    "transform": lambda t, p: np.allclose(
        np.expm1(_prepared(p, transform="log1p").filled[:, 0]), _prepared(p).filled[:, 0]
    ),
    "synthetic_length": lambda t, p: len(_synthetic(p, synthetic_length=300).series) == 300,
}


def _synthetic(tmp_path, **changes):
    task = ForecastTask(TINY.replace(**changes))
    (tmp_path / "synthetic").mkdir()
    task.prepare(tmp_path / "synthetic")
    return task


def _varies_with_rng(task):
    params, batch = _params(task), task.batches("train")[0]
    runs = [task.metrics(params, batch, train=True, rng=jax.random.key(k))["loss"] for k in (1, 2)]
    return bool(runs[0] != runs[1])


def _loss(task):
    return float(
        task.metrics(_params(task), task.batches("train")[0], train=False, rng=None)["loss"]
    )


def test_every_forecasting_field_is_checked():
    shared = {f.name for f in dataclasses.fields(train.TrainConfig)}  # tests/test_sentiment.py
    assert set(CHECKS) == {f.name for f in dataclasses.fields(ForecastConfig)} - shared


@pytest.mark.parametrize("field", sorted(CHECKS))
def test_forecasting_field_reaches_what_it_controls(field, tmp_path):
    assert CHECKS[field](None, tmp_path)
