"""What a forecaster's user would run instead, on the same windows: each baseline returns
`<float64>[windows, horizon]` forecasts, in the target's units, from each window's origin
(the first step after its input).

- `persistence`: the last observed value, for every step ahead;
- `seasonal_naive`: the value one season before the step (whole seasons back from the
  origin when the horizon is longer than a season);
- `moving_average`: the mean of the last `season` observed values (the input width at
  most);
- `linear`: least squares from the normalised input window (every column) to the horizon,
  fitted on the training windows;
- `ets`: Holt-Winters exponential smoothing (additive damped trend, additive season;
  `statsmodels`) fitted on the training part, then run over the whole series with those
  parameters, so each origin's forecast uses the states filtered up to it (a rolling
  origin, parameters fixed).

Every baseline reads the gap-filled target (`series.fill_gaps`); where a seasonal value it
needs is still missing it takes the last observed value instead.
"""

from __future__ import annotations

import warnings

import numpy as np

NAMES = ("persistence", "seasonal_naive", "moving_average", "linear", "ets")


def persistence(target: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    return np.repeat(target[origins - 1][:, None], horizon, axis=1)


def seasonal_naive(
    target: np.ndarray, origins: np.ndarray, horizon: int, season: int
) -> np.ndarray:
    if season < 1:
        return persistence(target, origins, horizon)
    steps = np.arange(horizon)
    back = season * (steps // season + 1)  # whole seasons, so the value is known at origin
    index = origins[:, None] + steps[None, :] - back[None, :]
    values = np.where(index >= 0, target[np.maximum(index, 0)], np.nan)
    return np.where(np.isnan(values), persistence(target, origins, horizon), values)


def moving_average(target: np.ndarray, origins: np.ndarray, horizon: int, width: int) -> np.ndarray:
    window = target[origins[:, None] - np.arange(1, width + 1)[None, :]]
    return np.repeat(np.nanmean(window, axis=1)[:, None], horizon, axis=1)


def linear(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, ridge: float = 1e-3
) -> np.ndarray:
    """Least squares (with a small ridge) from flattened input windows `[n, width, F]` to
    targets `[n, horizon]`, with an intercept; returns the test windows' forecasts."""

    def design(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x.reshape(len(x), -1), np.ones((len(x), 1))], axis=1)

    a = design(train_x)
    gram = a.T @ a + ridge * len(a) * np.eye(a.shape[1])
    weights = np.linalg.solve(gram, a.T @ train_y)
    return design(test_x) @ weights


def ets(
    target: np.ndarray, train_end: int, origins: np.ndarray, horizon: int, season: int
) -> np.ndarray:
    """Holt-Winters fitted on `target[:train_end]`, forecasts from each origin (see the
    module docstring). Missing values are interpolated for the filter only."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    filled = _interpolated(target)
    seasonal = season if season >= 2 and train_end >= 2 * season else None
    options = dict(trend="add", damped_trend=True, seasonal="add" if seasonal else None)
    options["seasonal_periods"] = seasonal
    with warnings.catch_warnings():  # convergence chatter; the fit is checked below
        warnings.simplefilter("ignore")
        fitted = ExponentialSmoothing(
            filled[:train_end], initialization_method="heuristic", **options
        ).fit()
        p = fitted.params
        known = dict(
            initial_level=p["initial_level"],
            initial_trend=p["initial_trend"],
            initial_seasonal=p["initial_seasons"] if seasonal else None,
        )
        run = ExponentialSmoothing(filled, initialization_method="known", **known, **options)
        states = run.fit(
            smoothing_level=p["smoothing_level"],
            smoothing_trend=p["smoothing_trend"],
            smoothing_seasonal=p["smoothing_seasonal"] if seasonal else None,
            damping_trend=p["damping_trend"],
            optimized=False,
        )
    phi = p["damping_trend"]
    damp = np.cumsum(phi ** np.arange(1, horizon + 1))  # sum_{i=1..h} phi^i
    last = origins - 1
    forecast = states.level[last][:, None] + damp[None, :] * states.trend[last][:, None]
    if seasonal:
        steps = np.arange(horizon)
        index = origins[:, None] - seasonal + steps[None, :] % seasonal
        forecast = forecast + states.season[index]
    return forecast


def _interpolated(target: np.ndarray) -> np.ndarray:
    known = np.flatnonzero(~np.isnan(target))
    return np.interp(np.arange(len(target)), known, target[known])
