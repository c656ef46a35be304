"""Time series in, windows out: CSV reading and checking, gaps, the split, the scaler, windows.

1. `read_csv` reads a user's CSV into a `Series`: timestamps parsed and checked (sorted, no
   duplicates, a regular step or the one stated; missing steps become missing rows),
   the target first, then the features, categorical ones one-hot encoded. Bad input is a
   `DataError` naming the file, column and row. `synthetic` makes the trend + seasonality
   + noise series that courses use, from a seed.
2. `fill_gaps` is the missing-value policy: a gap of up to `max_gap` steps is linearly
   interpolated; a longer one is left missing, and no window may touch it.
3. `split_bounds` cuts the series in time (train, validation, test: no shuffling across);
   `Scaler` holds the training part's mean and standard deviation per column.
4. `window_starts` finds the windows (input width + horizon) inside a part that touch no
   missing value, by index arithmetic on a cumulative count; `windows` gathers a batch of
   them from a strided view of the series (no copy of the series per window).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lstm_jax.tasks.errors import DataError


@dataclasses.dataclass
class Series:
    """A regular time series: `times <datetime64>[n]`, `values <float64>[n, columns]` (NaN
    where missing), `columns` (the target's name first), and `freq`, the step between
    rows as a pandas offset ("h", "D", "MS")."""

    times: np.ndarray
    values: np.ndarray
    columns: list[str]
    freq: str
    missing_rows: int = 0  # timestamps absent from the file, added as missing rows

    def future(self, steps: int) -> np.ndarray:
        """`<datetime64>[steps]`: the timestamps of the `steps` rows after the last."""
        import pandas as pd

        return pd.date_range(self.times[-1], periods=steps + 1, freq=self.freq)[1:].to_numpy()

    def __len__(self) -> int:
        return len(self.values)


def _time_column(frame: Any, names: list[str], path: Path) -> Any:
    """The timestamps of `frame` from one column, or several (e.g. year, month, day, hour)."""
    import pandas as pd

    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: no column {missing[0]!r} for the timestamps; the columns are "
            f"{list(frame.columns)} (pass --time-column NAME, or NAME,NAME,... for parts)"
        )
    try:
        if len(names) == 1:
            return pd.to_datetime(frame[names[0]], format="mixed")
        parts = ("year", "month", "day", "hour", "minute", "second")
        return pd.to_datetime(frame[names].set_axis(list(parts[: len(names)]), axis=1))
    except (ValueError, TypeError) as error:
        raise DataError(
            f"{path}: column(s) {names} do not parse as timestamps ({error}); give a "
            "date or date-time column, or its parts in the order year,month,day,hour"
        ) from None


def read_csv(
    path: str | Path,
    *,
    time_column: str,
    target: str,
    features: Sequence[str] = (),
    step: str = "",
) -> Series:
    """Read `path` into a `Series` of `target` and `features` (see the module docstring).

    `time_column`: a column name, or comma-separated parts (`"year,month,day,hour"`).
    `step`: the series' step as a pandas offset (`"1h"`, `"1D"`, `"1MS"`); "" infers the
    most common difference, and every other difference must be a multiple of it.
    """
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass the CSV with --csv PATH")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None
    names = [n.strip() for n in time_column.split(",") if n.strip()]
    if not names:
        raise DataError(
            f"{path}: name the time column (--time-column); columns: {list(frame.columns)}"
        )
    for name in (target, *features):
        if name not in frame.columns:
            raise DataError(f"{path}: no column {name!r}; the columns are {list(frame.columns)}")
    times = _time_column(frame, names, path)
    row_of = lambda i: i + 2  # noqa: E731  (the header is row 1)
    bad = np.flatnonzero(times.isna().to_numpy())
    if bad.size:
        raise DataError(f"{path}: row {row_of(bad[0])} has no timestamp in {names}")
    diffs = np.diff(times.to_numpy())
    zero = np.flatnonzero(diffs == np.timedelta64(0))
    if zero.size:
        raise DataError(f"{path}: row {row_of(zero[0] + 1)} repeats the timestamp {times[zero[0]]}")
    back = np.flatnonzero(diffs < np.timedelta64(0))
    if back.size:
        raise DataError(
            f"{path}: row {row_of(back[0] + 1)} ({times[back[0] + 1]}) comes before the row "
            "above it; sort the file by time"
        )
    columns = [_numeric(frame[target], target, path, categorical=False)]
    names_out = [target]
    for name in features:
        block, labels = _feature(frame[name], name, path)
        columns.append(block)
        names_out.extend(labels)
    values = np.column_stack(columns).astype(np.float64)
    if np.all(np.isnan(values[:, 0])):
        raise DataError(f"{path}: the target {target!r} has no value in any row")
    return _regular(times, values, names_out, step, path)


def _numeric(column: Any, name: str, path: Path, *, categorical: bool) -> np.ndarray:
    """`column` as floats (empty and NA cells missing); a `DataError` naming the first row
    that is no number."""
    import pandas as pd

    parsed = pd.to_numeric(column, errors="coerce")
    bad = parsed.isna() & column.notna()
    if bad.any() and not categorical:
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: column {name!r}, row {row + 2}: {column.iloc[row]!r} is not a number"
        )
    return parsed.to_numpy(np.float64)


def _feature(column: Any, name: str, path: Path) -> tuple[np.ndarray, list[str]]:
    """A numeric feature as one column, a categorical one (any non-numeric value) one-hot
    encoded: one column per category, `name=value`, all NaN where the cell is empty."""
    import pandas as pd

    parsed = pd.to_numeric(column, errors="coerce")
    if not (parsed.isna() & column.notna()).any():
        return parsed.to_numpy(np.float64)[:, None], [name]
    categories = sorted(str(v) for v in column.dropna().unique())
    onehot = np.zeros((len(column), len(categories)))
    for j, category in enumerate(categories):
        onehot[:, j] = (column.astype(str) == category).to_numpy()
    onehot[column.isna().to_numpy()] = np.nan
    return onehot, [f"{name}={c}" for c in categories]


def _regular(times: Any, values: np.ndarray, columns: list[str], step: str, path: Path) -> Series:
    """Put the rows on a regular grid of `step` (inferred when ""), missing steps as NaN."""
    import pandas as pd

    stamps = times.to_numpy()
    if len(stamps) < 2:
        raise DataError(f"{path}: {len(stamps)} row(s); a series needs at least 2")
    if step:
        try:
            grid = pd.date_range(stamps[0], stamps[-1], freq=step)
        except ValueError as error:
            raise DataError(f"{path}: --step {step!r} is not a pandas offset ({error})") from None
    else:
        grid = _inferred_grid(times, path)
    index = pd.Index(grid).get_indexer(stamps)
    off = np.flatnonzero(index < 0)
    if off.size:
        raise DataError(
            f"{path}: row {off[0] + 2} ({times[off[0]]}) is off the series' regular step "
            f"({grid[1] - grid[0] if len(grid) > 1 else step}); state the step with --step"
        )
    full = np.full((len(grid), values.shape[1]), np.nan)
    full[index] = values
    freq = grid.freqstr or pd.tseries.frequencies.to_offset(grid[1] - grid[0]).freqstr
    return Series(grid.to_numpy(), full, columns, freq, missing_rows=len(grid) - len(stamps))


def _inferred_grid(times: Any, path: Path) -> Any:
    """A regular grid from the most common difference: a fixed one (hours, days), or whole
    calendar months when the differences are months of 28 to 31 days."""
    import pandas as pd

    diffs = pd.Series(np.diff(times.to_numpy()))
    common = diffs.mode().iloc[0]
    days = common / pd.Timedelta(days=1)
    if 28 <= days <= 31:  # calendar months
        if (times.dt.day != times.iloc[0].day).any():
            raise DataError(f"{path}: monthly rows on different days of the month; --step 1MS")
        return pd.date_range(
            times.iloc[0], times.iloc[-1], freq="MS" if times.iloc[0].day == 1 else "ME"
        )
    return pd.date_range(times.iloc[0], times.iloc[-1], freq=common)


def synthetic(length: int, seed: int, season: int = 24) -> Series:
    """The course's series: a linear trend, a seasonal cycle of `season` steps (a sine and
    its harmonic), and Gaussian noise, from `np.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    phase = 2 * np.pi * t / max(season, 1)
    values = 10 + 0.01 * t + 5 * np.sin(phase) + 2 * np.cos(2 * phase) + rng.normal(0, 1, length)
    times = np.datetime64("2000-01-01T00", "h") + np.arange(length).astype("timedelta64[h]")
    return Series(times.astype("datetime64[ns]"), values[:, None], ["value"], "h")


def calendar(times: np.ndarray, freq: str) -> tuple[np.ndarray, list[str]]:
    """Calendar columns for `times`: the sine and cosine of the hour of the day (for steps
    under a day), of the day of the week (under a week) and of the day of the year (under
    a year); `<float64>[n, k]` and their names."""
    import pandas as pd

    stamps = pd.DatetimeIndex(times)
    step = pd.tseries.frequencies.to_offset(freq)
    try:
        span = pd.Timedelta(step)
    except ValueError:  # calendar offsets (months, years): no fixed length
        span = pd.Timedelta(days=28)
    cycles = []
    if span < pd.Timedelta(days=1):
        cycles.append(("hour", stamps.hour + stamps.minute / 60, 24))
    if span < pd.Timedelta(days=7):
        cycles.append(("weekday", stamps.day_of_week, 7))
    if span < pd.Timedelta(days=365):
        cycles.append(("yearday", stamps.day_of_year - 1, 365.25))
    columns, names = [], []
    for name, value, period in cycles:
        angle = 2 * np.pi * np.asarray(value, np.float64) / period
        columns += [np.sin(angle), np.cos(angle)]
        names += [f"{name}_sin", f"{name}_cos"]
    return np.column_stack(columns) if columns else np.zeros((len(times), 0)), names


# ----------------------------------------------------------------------------------
# Gaps, the split, the scaler.
# ----------------------------------------------------------------------------------
def fill_gaps(values: np.ndarray, max_gap: int) -> tuple[np.ndarray, dict[str, int]]:
    """Linearly interpolate, column by column, the runs of at most `max_gap` missing values
    that have a value on both sides; longer runs (and runs at either end) stay NaN.
    Returns the filled copy and the counts `{"missing", "filled", "left"}`."""
    filled = values.copy()
    counts = {"missing": int(np.isnan(values).sum()), "filled": 0}
    for j in range(values.shape[1]):
        column = filled[:, j]
        missing = np.isnan(column)
        if not missing.any():
            continue
        known = np.flatnonzero(~missing)
        if known.size == 0:
            continue
        # Each missing run: [start, stop), with its length.
        edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        inner = (starts > 0) & (stops < len(column)) & (stops - starts <= max_gap)
        interp = np.interp(np.arange(len(column)), known, column[known])
        for start, stop in zip(starts[inner], stops[inner], strict=True):
            column[start:stop] = interp[start:stop]
            counts["filled"] += int(stop - start)
    counts["left"] = int(np.isnan(filled).sum())
    return filled, counts


def split_bounds(length: int, train: float, val: float) -> tuple[int, int]:
    """The ends of the training and validation parts of a series of `length` rows (rounded
    down, but for float error: 0.7 + 0.1 of 480 rows ends at 384); the test part is the
    rest, in time order."""
    return int(length * train + 1e-9), int(length * (train + val) + 1e-9)


@dataclasses.dataclass
class Scaler:
    """Per-column mean and standard deviation of the training part (1 where a column is
    constant there), saved beside a run as JSON."""

    columns: list[str]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, columns: list[str]) -> Scaler:
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        return cls(list(columns), mean, np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def target_units(self, normalized: np.ndarray) -> np.ndarray:
        """Normalised target values back in the target's units (column 0)."""
        return normalized * self.std[0] + self.mean[0]

    def save(self, path: Path) -> None:
        blob = {"columns": self.columns, "mean": self.mean.tolist(), "std": self.std.tolist()}
        Path(path).write_text(json.dumps(blob, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Scaler:
        try:
            blob = json.loads(Path(path).read_text())
            return cls(blob["columns"], np.asarray(blob["mean"]), np.asarray(blob["std"]))
        except (OSError, ValueError, KeyError) as error:
            raise DataError(
                f"{path} is not a scaler saved by a forecasting run ({error}); train the run "
                "again with --overwrite"
            ) from None


# ----------------------------------------------------------------------------------
# Windows.
# ----------------------------------------------------------------------------------
def window_starts(usable: np.ndarray, lo: int, hi: int, size: int, stride: int = 1) -> np.ndarray:
    """`<int64>[n]` starts s, from `lo` in steps of `stride`, of the windows `[s, s + size)`
    that lie inside `[lo, hi)` and hold only usable rows."""
    bad = np.concatenate([[0], np.cumsum(~usable)])  # bad[i]: unusable rows before i
    starts = np.arange(lo, max(hi - size + 1, lo), stride)
    return starts[bad[starts + size] == bad[starts]]


def windows(values: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """`<float>[len(starts), size, columns]`: the windows of `values` at `starts`, gathered
    from a strided view (`sliding_window_view`), so only the batch is copied."""
    view = np.lib.stride_tricks.sliding_window_view(values, size, axis=0)  # [n', columns, size]
    return np.swapaxes(view[starts], 1, 2)
