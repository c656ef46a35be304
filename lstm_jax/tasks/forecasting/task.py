"""Time-series forecasting as a task on the shared trainer: config, windows, loss, and the
comparison with the baselines on the same test windows.

A run reads its series (`csv`, or the synthetic one), fills short gaps (`max_gap`), splits
it in time (70/20/10 by default), normalises every column with the training part's
statistics (saved as `scaler.json`), and trains a `Forecaster` on windows of `input_width`
steps to predict the next `horizon` target values, with the mean squared error of the
normalised target. Metrics are per forecast step, in the target's units: MAE and RMSE.
At the end the run compares the model with the baselines (`baselines.py`) on the test
windows (`comparison.json`, `forecast.png`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax.models import DECODERS, Forecaster
from lstm_jax.tasks.errors import DataError
from lstm_jax.tasks.forecasting import baselines
from lstm_jax.tasks.forecasting import series as series_lib
from lstm_jax.train import Task, TrainConfig
from lstm_jax.train.config import option, rate
from lstm_jax.train.task import SPLITS

SCALER_FILE = "scaler.json"
TRANSFORMS = ("none", "log1p")
COMPARISON_FILE = "comparison.json"
PLOT_FILE = "forecast.png"


@dataclasses.dataclass(frozen=True)
class ForecastConfig(TrainConfig):
    """A forecasting run: the trainer's fields (`TrainConfig`) and these."""

    task: ClassVar[str] = "forecasting"

    csv: str = option("", "the series' CSV file (empty: the synthetic series)")
    time_column: str = option("", "timestamp column, or its parts: year,month,day,hour")
    target: str = option("", "the column to forecast")
    features: str = option("", "more input columns, comma-separated (text ones one-hot)")
    step: str = option("", "the series' step as a pandas offset, 1h or 1D (empty: inferred)")
    max_gap: int = option(24, "interpolate gaps of up to N steps; longer ones drop windows", low=0)
    input_width: int = option(48, "steps in a window's input", low=1)
    horizon: int = option(24, "steps forecast from each window", low=1)
    stride: int = option(1, "steps between training windows", low=1)
    train_fraction: float = option(
        0.7,
        "the first part of the series, for training",
        low=0,
        high=1,
        open_low=True,
        open_high=True,
    )
    val_fraction: float = option(
        0.2,
        "the next part, for validation (the rest: test)",
        low=0,
        high=1,
        open_low=True,
        open_high=True,
    )
    season: int = option(24, "the seasonal period in steps, for the baselines (0: none)", low=0)
    cell: str = option(
        "lstm", "the recurrent cell", choices=("lstm", "gru", "simple_rnn", "carry_lstm")
    )
    hidden: int = option(64, "units per recurrent layer", low=1)
    layers: int = option(1, "stacked recurrent layers", low=1)
    decoder: str = option("direct", "direct head, or autoregressive decoding", choices=DECODERS)
    dropout: float = rate("dropout between layers and before the head")
    relative: bool = option(True, "forecast changes from the window's last target value")
    keep_level: bool = option(True, "with relative, also read the target's level")
    calendar: bool = option(False, "add the hour, weekday and day of year as inputs")
    loss: str = option(
        "mse", "what training minimises: squared or absolute error", choices=("mse", "mae")
    )
    transform: str = option(
        "none",
        "the target's scale for the model: none, or log1p (a skewed, positive one)",
        choices=TRANSFORMS,
    )
    synthetic_length: int = option(2000, "rows of the synthetic series (no csv)", low=10)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.csv and not (self.time_column and self.target):
            raise ValueError("a CSV needs --time-column and --target (the column to forecast)")
        if self.train_fraction + self.val_fraction >= 1.0:
            raise ValueError(
                f"train_fraction + val_fraction must leave a test part, got "
                f"{self.train_fraction} + {self.val_fraction}"
            )


class Window(NamedTuple):
    """One batch of windows: `xs <float32>[batch, input_width, columns]` (normalised, the
    target in column 0), `ys <float32>[batch, horizon]` (normalised target), `weights
    <float32>[batch]` (0 for rows that only fill the batch up)."""

    xs: np.ndarray
    ys: np.ndarray
    weights: np.ndarray


class ForecastTask(Task):
    """Forecast `horizon` steps of a series from windows of it (see the module docstring).

    `data`: the CSV to read instead of `config.csv` (same columns), e.g. where the file
    lies on another machine.
    """

    artefacts: ClassVar[tuple[str, ...]] = (SCALER_FILE, COMPARISON_FILE, PLOT_FILE)
    selection: ClassVar[tuple[str, str]] = ("mae", "min")

    def __init__(self, config: ForecastConfig, *, data: str | Path | None = None):
        self.config = config
        self.path = str(data) if data is not None else config.csv
        self.model = Forecaster(
            config.horizon,
            config.hidden,
            config.layers,
            config.cell,
            config.decoder,
            config.dropout,
            config.relative,
            config.keep_level,
            config.engine,
            config.matmul_dtype,
        )
        self.series: series_lib.Series | None = None
        self.scaler: series_lib.Scaler | None = None
        self.filled: np.ndarray | None = None  # the series with its short gaps filled
        self.target: np.ndarray | None = None  # its target, in the target's units
        self.normalized: np.ndarray | None = None
        self._apply: dict[int | None, Any] = {}
        self.starts: dict[str, np.ndarray] = {}
        self.bounds: tuple[int, int] = (0, 0)
        self.gaps: dict[str, int] = {}

    # ------------------------------------------------------------------------------
    # Data.
    # ------------------------------------------------------------------------------
    def read(self) -> series_lib.Series:
        """The series of this run, as configured (not yet filled or normalised)."""
        config = self.config
        if self.path:
            features = [f.strip() for f in config.features.split(",") if f.strip()]
            series = series_lib.read_csv(
                self.path,
                time_column=config.time_column,
                target=config.target,
                features=features,
                step=config.step,
            )
        else:
            series = series_lib.synthetic(config.synthetic_length, config.seed, config.season)
        if config.calendar:
            columns, names = series_lib.calendar(series.times, series.freq)
            series.values = np.concatenate([series.values, columns], axis=1)
            series.columns = series.columns + names
        return series

    def prepare(self, workdir: Path, splits: Sequence[str] = SPLITS) -> None:
        """Read, fill and split the series; fit the scaler on the training part (saved as
        `scaler.json`) or, without "train", read the run's; find every split's windows."""
        config = self.config
        series = self.read()
        values = series.values.copy()
        if config.transform == "log1p":
            if np.nanmin(values[:, 0]) < 0:
                raise DataError(
                    f"{self.path}: transform log1p needs a target of no negative values; "
                    f"{config.target!r} goes down to {np.nanmin(values[:, 0])}"
                )
            values[:, 0] = np.log1p(values[:, 0])
        filled, self.gaps = series_lib.fill_gaps(values, config.max_gap)
        self.bounds = series_lib.split_bounds(
            len(series), config.train_fraction, config.val_fraction
        )
        path = Path(workdir) / SCALER_FILE
        if "train" in splits and not path.exists():
            self.scaler = series_lib.Scaler.fit(filled[: self.bounds[0]], series.columns)
            self.scaler.save(path)
        else:
            if not path.is_file():
                raise DataError(f"{path} not found: {workdir} holds no finished forecasting run")
            self.scaler = series_lib.Scaler.load(path)
            if self.scaler.columns != series.columns:
                raise DataError(
                    f"{self.path or 'the synthetic series'} has the columns {series.columns}, "
                    f"the run was trained on {self.scaler.columns}"
                )
        self.series = series
        self.filled = filled
        self.target = self._units(filled[:, 0])
        self.normalized = self.scaler.transform(filled).astype(np.float32)
        usable = ~np.isnan(self.normalized).any(axis=1)
        size = config.input_width + config.horizon
        ranges = {
            "train": (0, self.bounds[0]),
            "val": self.bounds,
            "test": (self.bounds[1], len(series)),
        }
        self.starts = {}
        for name in SPLITS:
            lo, hi = ranges[name]
            stride = config.stride if name == "train" else 1
            self.starts[name] = series_lib.window_starts(usable, lo, hi, size, stride)
            if name in splits and self.starts[name].size == 0:
                raise DataError(
                    f"{self.path or 'the synthetic series'}: its {name} part "
                    f"({hi - lo} rows, {len(series)} in all) holds no window of {size} steps "
                    f"(input_width {config.input_width} + horizon {config.horizon}) without "
                    "a long gap; use a longer series or shorter windows"
                )

    def describe(self) -> str:
        """What `prepare` did to the data, in one paragraph (for the run's log)."""
        g = self.gaps
        counts = ", ".join(f"{k} {v.size}" for k, v in self.starts.items())
        return (
            f"{len(self.series)} rows of {len(self.series.columns)} columns "
            f"({self.series.missing_rows} missing timestamps added); {g['missing']} missing "
            f"values, {g['filled']} interpolated (gaps up to {self.config.max_gap} steps), "
            f"{g['left']} left in longer gaps; windows: {counts}"
        )

    def batches(self, split: str, epoch: int = 0) -> list[Window]:
        """Fixed-shape batches of `split`'s windows; the training ones shuffled by
        `(seed, epoch)`."""
        if split not in self.starts:
            raise ValueError(f"split {split!r} is not prepared; call prepare() with it first")
        starts = self.starts[split]
        if split == "train":
            starts = np.random.default_rng([self.config.seed, epoch]).permutation(starts)
        size = self.config.batch_size
        return [self._batch(starts[i : i + size]) for i in range(0, len(starts), size)]

    def num_batches(self, split: str) -> int:
        return -(-len(self.starts[split]) // self.config.batch_size)

    def _batch(self, starts: np.ndarray) -> Window:
        width, horizon = self.config.input_width, self.config.horizon
        block = series_lib.windows(self.normalized, starts, width + horizon)
        pad = self.config.batch_size - len(starts)
        xs = np.pad(block[:, :width], ((0, pad), (0, 0), (0, 0)))
        ys = np.pad(block[:, width:, 0], ((0, pad), (0, 0)))
        weights = np.concatenate([np.ones(len(starts)), np.zeros(pad)]).astype(np.float32)
        return Window(xs, ys, weights)

    # ------------------------------------------------------------------------------
    # Model and metrics.
    # ------------------------------------------------------------------------------
    def init_params(self, key: jax.Array) -> Any:
        xs = jnp.zeros((1, self.config.input_width, self._columns()), jnp.float32)
        return self.model.init(key, xs)["params"]

    def _columns(self) -> int:
        if self.scaler is not None:
            return len(self.scaler.columns)
        return 1 + len([f for f in self.config.features.split(",") if f.strip()])

    def metrics(
        self, params: Any, batch: Window, *, train: bool, rng: jax.Array | None
    ) -> dict[str, jax.Array]:
        """Per forecast step: squared error of the normalised target (the loss), absolute
        and squared error in the target's units; summed, with `count` the forecast steps."""
        rngs = {"dropout": rng} if train else {}
        pred = self.model.apply({"params": params}, batch.xs, train=train, rngs=rngs)
        err = pred - batch.ys
        w = batch.weights[:, None]
        units = self._units(self.scaler.target_units(pred), jnp) - self._units(
            self.scaler.target_units(batch.ys), jnp
        )
        loss = err**2 if self.config.loss == "mse" else jnp.abs(err)
        return {
            "loss": jnp.sum(w * loss),
            "mae": jnp.sum(w * jnp.abs(units)),
            "mse": jnp.sum(w * units**2),
            "count": jnp.sum(batch.weights) * err.shape[1],
        }

    def _units(self, target: Any, xp: Any = np) -> Any:
        """Target values in the model's scale (after `transform`) back in the target's units."""
        return xp.expm1(target) if self.config.transform == "log1p" else target

    def report(self, means: dict[str, float]) -> dict[str, float]:
        return {**means, "rmse": math.sqrt(means["mse"])}

    # ------------------------------------------------------------------------------
    # Forecasts and the comparison.
    # ------------------------------------------------------------------------------
    def predict(self, params: Any, starts: np.ndarray, steps: int | None = None) -> np.ndarray:
        """`<float64>[windows, steps]`: the model's forecasts, in the target's units, from
        the windows at `starts` (their input only)."""
        if steps not in self._apply:
            model = self.model
            self._apply[steps] = jax.jit(lambda p, x: model.apply({"params": p}, x, steps=steps))
        apply = self._apply[steps]
        width, out = self.config.input_width, []
        for i in range(0, len(starts), self.config.batch_size):
            chunk = starts[i : i + self.config.batch_size]
            xs = series_lib.windows(self.normalized, chunk, width)
            pad = self.config.batch_size - len(chunk)  # one compiled shape
            xs = np.pad(xs, ((0, pad), (0, 0), (0, 0)))
            out.append(np.asarray(apply(params, xs))[: len(chunk)])
        return self._units(self.scaler.target_units(np.concatenate(out).astype(np.float64)))

    def compare(self, params: Any) -> dict[str, Any]:
        """MAE and RMSE of the model and of every baseline on the test windows, in the
        target's units: over all forecast steps, and per step."""
        config = self.config
        width, horizon = config.input_width, config.horizon
        starts = self.starts["test"]
        origins = starts + width
        target = self.target
        truth = target[origins[:, None] + np.arange(horizon)[None, :]]
        season = config.season
        forecasts = {
            "lstm_jax" if config.cell == "lstm" else f"lstm_jax-{config.cell}": self.predict(
                params, starts
            ),
            "persistence": baselines.persistence(target, origins, horizon),
            "seasonal_naive": baselines.seasonal_naive(target, origins, horizon, season),
            "moving_average": baselines.moving_average(
                target, origins, horizon, min(max(season, 1), width)
            ),
        }
        train = self.starts["train"]
        size = width + horizon
        train_block = series_lib.windows(self.normalized, train, size)
        test_x = series_lib.windows(self.normalized, starts, width)
        linear = baselines.linear(train_block[:, :width], train_block[:, width:, 0], test_x)
        forecasts["linear"] = self._units(self.scaler.target_units(linear))
        forecasts["ets"] = baselines.ets(target, self.bounds[0], origins, horizon, season)
        table = {}
        for name, forecast in forecasts.items():
            err = forecast - truth
            table[name] = {
                "mae": float(np.mean(np.abs(err))),
                "rmse": float(np.sqrt(np.mean(err**2))),
                "mae_by_step": np.mean(np.abs(err), axis=0).round(6).tolist(),
            }
        return {"windows": len(starts), "horizon": horizon, "models": table}

    def tables(self, params: Any) -> str:
        """`compare`'s numbers as Markdown: the models' MAE and RMSE over all forecast
        steps, then the MAE at a few steps ahead."""
        comparison = self.compare(params)
        models = comparison["models"]
        horizon = comparison["horizon"]
        steps = sorted({1, max(horizon // 4, 1), max(horizon // 2, 1), horizon})
        unit = self.config.target or "value"
        lines = [
            f"{comparison['windows']} test windows, horizon {horizon}, {unit} units",
            "",
            "| model | MAE | RMSE | " + " | ".join(f"MAE at {k}" for k in steps) + " |",
            "|---|---:|---:|" + "---:|" * len(steps),
        ]
        for name, row in sorted(models.items(), key=lambda item: item[1]["mae"]):
            at = " | ".join(f"{row['mae_by_step'][k - 1]:.3f}" for k in steps)
            lines.append(f"| {name} | {row['mae']:.3f} | {row['rmse']:.3f} | {at} |")
        return "\n".join(lines)

    def finish(self, workdir: Path, params: Any) -> dict[str, Any]:
        """The comparison on the test windows (`comparison.json`) and a plot of a test
        stretch with the forecasts (`forecast.png`); returns the MAE of each model."""
        comparison = self.compare(params)
        (Path(workdir) / COMPARISON_FILE).write_text(json.dumps(comparison, indent=2) + "\n")
        self.plot(params, Path(workdir) / PLOT_FILE)
        return {"test_mae_by_model": {k: v["mae"] for k, v in comparison["models"].items()}}

    def plot(
        self,
        params: Any,
        path: Path,
        *,
        origins: int = 4,
        future: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """A stretch of the test part: the truth, and the model's and persistence's
        forecasts from a few origins; with `future` (`forecast`'s times and values), a
        second panel with the series' last steps and the forecast beyond them."""
        from matplotlib.figure import Figure

        config = self.config
        width, horizon = config.input_width, config.horizon
        starts = self.starts["test"]
        chosen = starts[np.linspace(0, len(starts) - 1, min(origins, len(starts))).astype(int)]
        times, target = self.series.times, self.target
        fig = Figure(figsize=(11, 4 if future is None else 7))
        axes = fig.subplots(1 if future is None else 2, 1, squeeze=False)[:, 0]
        ax = axes[0]
        lo, hi = chosen[0], chosen[-1] + width + horizon
        ax.plot(times[lo:hi], target[lo:hi], color="0.3", lw=1, label="truth")
        model = self.predict(params, chosen)
        persist = baselines.persistence(target, chosen + width, horizon)
        for k, start in enumerate(chosen):
            origin = start + width
            span = times[origin : origin + horizon]
            first = k == 0  # one legend entry per line kind
            ax.plot(span, model[k], color="C0", lw=2, label="lstm_jax" if first else None)
            ax.plot(span, persist[k], "--", color="C1", label="persistence" if first else None)
            ax.axvline(times[origin], color="0.8", lw=0.8)
        ax.set_title("test part: forecasts from a few origins against the truth")
        if future is not None:
            ax = axes[1]
            recent = slice(max(len(target) - 4 * (width + horizon), 0), None)
            ax.plot(times[recent], target[recent], color="0.3", lw=1, label="series")
            ax.plot(*future, color="C0", lw=2, label="forecast")
            ax.set_title("the forecast after the series' end")
        for ax in axes:
            ax.set_ylabel(config.target or "value")
            ax.legend()
            ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, dpi=80)

    def forecast(self, params: Any, steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`(times, values)`: the forecast of the `steps` (default: the horizon) steps after
        the series' end, from its last window (which must hold no long gap)."""
        width = self.config.input_width
        start = len(self.series) - width
        usable = ~np.isnan(self.normalized[start:]).any()
        if not usable:
            raise DataError(
                f"the last {width} rows of {self.path or 'the series'} hold a gap longer than "
                f"max_gap ({self.config.max_gap}); the model needs a whole last window"
            )
        values = self.predict(params, np.array([start]), steps)[0]
        return self.series.future(len(values)), values
