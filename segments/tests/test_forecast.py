"""The daily revenue forecast and its rolling-origin backtest on simulated series; no DB."""

import numpy as np
import pandas as pd
import pytest

from segments.predictions.forecast import (
    FORECAST_COLUMNS,
    daily_series,
    forecast_backtest,
    seasonal_naive_forecast,
    series_forecast,
)

DAYS = pd.date_range("2024-01-01", periods=200, freq="D")  # a Monday
WEEKDAY_EFFECT = np.array([0.1, 0.2, 0.15, 0.3, 0.0, -np.inf, -0.5])  # closed on Saturdays


def simulated(seed: int, *, noise: float = 0.2) -> pd.Series:
    """exp(7 + 0.004 d + weekday effect + N(0, noise^2)) a day; Saturdays 0."""
    rng = np.random.default_rng(seed)
    d = np.arange(len(DAYS))
    log_value = 7 + 0.004 * d + WEEKDAY_EFFECT[DAYS.day_of_week] + rng.normal(0, noise, len(d))
    return pd.Series(np.exp(log_value), index=DAYS)


def test_daily_series_sums_net_revenue_and_counts_orders():
    orders = pd.DataFrame(
        {
            "ordered_at": pd.to_datetime(
                ["2024-01-01 10:00", "2024-01-01 23:00", "2024-01-03 09:00", "2024-01-04 00:00"]
            ),
            "value": [20.0, 5.0, -8.0, 99.0],
        }
    )

    daily = daily_series(orders, start=pd.Timestamp("2024-01-01"), end=pd.Timestamp("2024-01-04"))

    assert list(daily.itertuples(name=None)) == [
        (pd.Timestamp("2024-01-01"), 25.0, 2.0),
        (pd.Timestamp("2024-01-02"), 0.0, 0.0),
        (pd.Timestamp("2024-01-03"), -8.0, 0.0),
    ]


def test_series_forecast_recovers_trend_and_weekdays_and_closes_saturdays():
    series = simulated(1, noise=0.01)
    history = series.iloc[:140]

    forecast = series_forecast(history, horizon_days=28)

    assert list(forecast.columns) == FORECAST_COLUMNS
    assert forecast.index[0] == DAYS[140]
    saturdays = forecast.index.day_of_week == 5
    assert (forecast.loc[saturdays] == 0).all().all()
    truth = series.iloc[140:168][~saturdays]
    np.testing.assert_allclose(forecast.loc[~saturdays, "point"], truth, rtol=0.05)
    open_days = forecast.loc[~saturdays]
    assert (open_days["lower_95"] < open_days["lower_80"]).all()
    assert (open_days["lower_80"] < open_days["point"]).all()
    assert (open_days["point"] < open_days["upper_80"]).all()
    assert (open_days["upper_80"] < open_days["upper_95"]).all()


def test_series_forecast_intervals_cover_at_their_nominal_rate():
    # 300 independent series from the model's own story: the 80 % and 95 % intervals must
    # contain about 80 % and 95 % of the future open days.
    inside_80, inside_95 = [], []
    for seed in range(300):
        series = simulated(seed)
        forecast = series_forecast(series.iloc[:140], horizon_days=28)
        actual = series.iloc[140:168]
        open_days = actual > 0
        a, f = actual[open_days], forecast[open_days]
        inside_80.append(((a >= f["lower_80"]) & (a <= f["upper_80"])).mean())
        inside_95.append(((a >= f["lower_95"]) & (a <= f["upper_95"])).mean())

    assert np.mean(inside_80) == pytest.approx(0.80, abs=0.02)
    assert np.mean(inside_95) == pytest.approx(0.95, abs=0.015)


def test_seasonal_naive_repeats_the_last_week():
    series = simulated(2)

    forecast = seasonal_naive_forecast(series.iloc[:140], horizon_days=14)

    last_week = series.iloc[133:140].to_numpy()
    np.testing.assert_array_equal(forecast["point"], np.tile(last_week, 2))
    width_first = (forecast["upper_95"] - forecast["lower_95"]).iloc[0]
    width_second = (forecast["upper_95"] - forecast["lower_95"]).iloc[7]
    assert width_second == pytest.approx(width_first * np.sqrt(2))


def test_backtest_scores_a_perfect_weekly_pattern_as_exact():
    weekly = pd.Series(np.tile([5.0, 6, 7, 8, 9, 0, 3], 20), index=DAYS[:140])
    origins = [DAYS[70], DAYS[84]]

    naive = forecast_backtest(weekly, origins=origins, method=seasonal_naive_forecast)

    assert naive.mape == 0.0
    assert naive.points == 2 * 24  # 28 days minus 4 closed Saturdays, twice
    assert (naive.coverage_80, naive.coverage_95) == (1.0, 1.0)


def test_backtest_prefers_the_trend_model_on_a_growing_series():
    series = simulated(5, noise=0.05)
    origins = list(DAYS[[98, 112, 126, 140]])

    model = forecast_backtest(series, origins=origins, method=series_forecast)
    naive = forecast_backtest(series, origins=origins, method=seasonal_naive_forecast)

    assert model.mape < naive.mape
