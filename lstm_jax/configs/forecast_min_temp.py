"""Melbourne daily minimum temperature, a week ahead from the last 90 days.

An LSTM of 32 units on the temperature alone (the two missing days of the file are
interpolated), trained on the absolute error; a yearly season of 365 days for the
seasonal baselines.

Command:
    lstm-jax train --config forecast_min_temp --workdir runs/forecast_min_temp \
        --csv ../shared/data/timeseries/melbourne_daily_min_temperatures.csv
Result (seeds 0-2, 2 devices): test MAE over the week 2.000 degC (1.986-2.014); linear
regression 2.037, ETS 2.625, persistence 2.688 (docs/forecasting.md).
"""

from lstm_jax.tasks.forecasting import ForecastConfig


def get_config() -> ForecastConfig:
    return ForecastConfig(
        csv="../shared/data/timeseries/melbourne_daily_min_temperatures.csv",
        time_column="Date",
        target="Temp",
        max_gap=3,
        input_width=90,
        horizon=7,
        season=365,
        hidden=32,
        dropout=0.2,
        loss="mae",
        batch_size=64,
        epochs=20,
        learning_rate=1e-3,
        schedule="cosine",
    )
