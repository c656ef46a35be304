"""Time-series forecasting: an LSTM (or GRU) forecaster against the baselines its user would
run instead, on the shared trainer.

- `series`: CSV reading and checking, the missing-value policy, the split, the scaler,
  windows by index arithmetic;
- `baselines`: persistence, seasonal naive, moving average, linear regression, ETS;
- `task`: `ForecastConfig` and `ForecastTask` (and its comparison with the baselines).
"""

from lstm_jax.tasks.forecasting.task import ForecastConfig, ForecastTask

__all__ = ["ForecastConfig", "ForecastTask"]
