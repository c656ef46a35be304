"""Zurich monthly sunspot numbers, a year ahead from the last ten years.

An LSTM of 32 units on the sunspot number alone; the solar cycle of about 11 years (132
months) is the seasonal baselines' season.

Command:
    lstm-jax train --config forecast_sunspots --workdir runs/forecast_sunspots \
        --csv ../shared/data/timeseries/zurich_monthly_sunspots.csv
Result (seeds 0-2, 2 devices): test MAE over the year 17.54 (17.29-17.83); linear
regression 20.32, ETS 22.86, persistence 23.36 (docs/forecasting.md).
"""

from lstm_jax.tasks.forecasting import ForecastConfig


def get_config() -> ForecastConfig:
    return ForecastConfig(
        csv="../shared/data/timeseries/zurich_monthly_sunspots.csv",
        time_column="Month",
        target="Sunspots",
        input_width=120,
        horizon=12,
        season=132,
        hidden=32,
        dropout=0.2,
        batch_size=64,
        epochs=30,
        learning_rate=1e-3,
        schedule="cosine",
    )
