"""Forecasting, the defaults for any CSV: one LSTM layer of 64 units reads 48 steps of the
target and the features and forecasts the next 24, trained with the squared error.

Command (a user's series; text features are one-hot encoded):
    lstm-jax train --config forecast --workdir runs/my_series \
        --csv my_series.csv --time-column date --target sales --features price,promo \
        [--horizon 7 --input-width 28 --season 7]
Without --csv it trains on the synthetic series (`forecast_synthetic` is tuned for it).
"""

from lstm_jax.tasks.forecasting import ForecastConfig


def get_config() -> ForecastConfig:
    return ForecastConfig(epochs=20, schedule="cosine")
