"""Seasonal spike/drop detectors on seeded synthetic series (pure: no database).

Precision and recall floors sit a margin below what the seeds give (docs/anomalies.md has the
measured figures); the ESD test is checked against the NIST/SEMATECH handbook's worked example.
"""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from analytics.detectors.esd import esd_test
from analytics.detectors.findings import Direction, Severity, rows_median
from analytics.detectors.seasonal import (
    DAY,
    HOUR,
    SeasonalConfig,
    series_baseline,
    series_detect,
    series_detect_mad,
    series_detect_shesd,
    series_prepare,
)
from analytics.detectors.synthetic import detection_score, scores_sum, series_synthesize

SEEDS = range(10)
# Rosner (1983), as worked in the NIST/SEMATECH e-Handbook 1.3.5.17.3: 54 values, 3 outliers.
ROSNER = [
    -0.25, 0.68, 0.94, 1.15, 1.20, 1.26, 1.26, 1.34, 1.38, 1.43, 1.49, 1.49, 1.55, 1.56, 1.58,
    1.65, 1.69, 1.70, 1.76, 1.77, 1.81, 1.91, 1.94, 1.96, 1.99, 2.06, 2.09, 2.10, 2.14, 2.15,
    2.23, 2.24, 2.26, 2.35, 2.37, 2.40, 2.47, 2.54, 2.62, 2.64, 2.90, 2.92, 2.92, 2.93, 3.21,
    3.26, 3.30, 3.59, 3.68, 4.30, 4.64, 5.34, 5.42, 6.01,
]  # fmt: skip
NIST_R = [3.118, 2.942, 3.179, 2.810, 2.815, 2.848, 2.279, 2.310, 2.101, 2.067]
NIST_LAMBDA = [3.158, 3.151, 3.143, 3.136, 3.128, 3.120, 3.111, 3.103, 3.094, 3.085]
TUESDAY_2PM = pd.Timestamp("2026-03-03 14:00", tz="UTC")


def flat_hourly(weeks: int = 10, level: float = 80.0, seed: int = 3) -> pd.Series:
    """About `level` every hour with a little noise, ending the week of TUESDAY_2PM + 1 week."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(end=TUESDAY_2PM + pd.Timedelta(weeks=1, hours=6), periods=weeks * 168,
                          freq="h")  # fmt: skip
    return pd.Series(rng.poisson(level, len(index)).astype(float), index=index)


def total_score(detect, *, frequency: str, weeks: int, level: float):
    scores = []
    for seed in SEEDS:
        synthetic = series_synthesize(seed=seed, frequency=frequency, weeks=weeks, level=level)
        findings = detect(
            synthetic.series,
            metric="sessions",
            config=SeasonalConfig(frequency=frequency),
            start=synthetic.evaluate_from,
        )
        scores.append(detection_score(findings, synthetic))
    return scores_sum(scores)


def test_esd_test_matches_the_nist_worked_example():
    result = esd_test(np.array(ROSNER), max_outliers=10, robust=False)

    assert np.allclose(result.statistics, NIST_R, atol=0.002)
    assert np.allclose(result.criticals, NIST_LAMBDA, atol=0.002)
    assert sorted(np.array(ROSNER)[list(result.outliers)]) == [5.34, 5.42, 6.01]


def test_rows_median_matches_numpy_nanmedian():
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(500, 8))
    matrix[rng.random(matrix.shape) < 0.3] = np.nan
    matrix[0] = np.nan

    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(matrix, axis=1)

    assert np.allclose(rows_median(matrix), expected, equal_nan=True)


def test_baseline_expected_is_the_median_of_the_same_slot_weeks_before():
    series = series_synthesize(seed=4).series
    config = SeasonalConfig()
    slot = series.index.day_of_week * 24 + series.index.hour
    # Independently: pandas' rolling median over each slot's previous 8 values.
    reference = series.groupby(slot).transform(
        lambda s: s.shift(1).rolling(8, min_periods=config.min_history).median()
    )

    frame = series_baseline(series, config=config)

    assert np.allclose(frame["expected"], reference, equal_nan=True)
    assert frame["speaks"].iloc[: 3 * 168].sum() == 0


def test_mad_method_precision_and_recall_on_hourly_series():
    score = total_score(series_detect_mad, frequency=HOUR, weeks=16, level=40)

    assert score.precision >= 0.6
    assert score.recall >= 0.75


def test_mad_method_precision_and_recall_on_daily_series():
    score = total_score(series_detect_mad, frequency=DAY, weeks=52, level=2000)

    assert score.precision >= 0.8
    assert score.recall >= 0.85


def test_shesd_precision_and_recall_on_hourly_and_daily_series():
    hourly = total_score(series_detect_shesd, frequency=HOUR, weeks=16, level=40)
    daily = total_score(series_detect_shesd, frequency=DAY, weeks=52, level=2000)

    assert hourly.precision >= 0.35
    assert hourly.recall >= 0.8
    assert daily.precision >= 0.3
    assert daily.recall >= 0.7


def test_the_default_method_is_the_one_with_the_better_f1():
    def f1(score):
        return 2 * score.precision * score.recall / (score.precision + score.recall)

    mad = total_score(series_detect_mad, frequency=HOUR, weeks=16, level=40)
    shesd = total_score(series_detect_shesd, frequency=HOUR, weeks=16, level=40)

    assert f1(mad) > f1(shesd)


@pytest.mark.parametrize("method", [series_detect_mad, series_detect_shesd])
def test_a_spike_in_the_history_does_not_mask_the_next_one(method):
    series = flat_hourly()
    week_before = TUESDAY_2PM - pd.Timedelta(weeks=1)
    series[[week_before, TUESDAY_2PM]] = 400.0

    findings = method(series, metric="sessions", start=week_before)

    assert [f.window_start for f in findings] == [week_before, TUESDAY_2PM]


def test_the_mad_method_sees_a_third_spike_in_the_same_slot():
    # S-H-ESD's slot median over its 4-week window is 400 by then (a known limit, documented).
    series = flat_hourly()
    spikes = [TUESDAY_2PM - pd.Timedelta(weeks=weeks) for weeks in (2, 1, 0)]
    series[spikes] = 400.0

    findings = series_detect_mad(series, metric="sessions", start=spikes[0])

    assert [f.window_start for f in findings] == spikes


@pytest.mark.parametrize("method", [series_detect_mad, series_detect_shesd])
def test_no_alarm_before_the_minimum_history(method):
    series = flat_hourly(weeks=3)
    early = series.index[0] + pd.Timedelta(weeks=2, hours=14)  # two earlier values of its slot
    series[early] = 1000.0

    silent = method(series, metric="sessions", config=SeasonalConfig(min_history=3))
    speaking = method(series, metric="sessions", config=SeasonalConfig(min_history=1))

    assert silent == []
    assert early in [f.window_start for f in speaking]


@pytest.mark.parametrize("method", [series_detect_mad, series_detect_shesd])
def test_no_alarm_on_a_marked_holiday(method):
    series = flat_hourly()
    series[TUESDAY_2PM] = 0.0
    holiday = SeasonalConfig(holidays=frozenset({TUESDAY_2PM.date()}))

    unmarked = method(series, metric="sessions", start=TUESDAY_2PM.normalize())
    marked = method(series, metric="sessions", config=holiday, start=TUESDAY_2PM.normalize())

    assert TUESDAY_2PM in [f.window_start for f in unmarked]
    assert marked == []


def test_a_holiday_stays_out_of_the_next_weeks_baseline():
    series = flat_hourly()
    christmas = TUESDAY_2PM - pd.Timedelta(weeks=1)
    series[christmas] = 5000.0
    config = SeasonalConfig(holidays=frozenset({christmas.date()}), history_weeks=3, min_history=2)
    without = series.copy()
    without[christmas] = np.nan

    marked = series_baseline(series, config=config)
    reference = series_baseline(without, config=config)

    assert marked.loc[TUESDAY_2PM, "expected"] == reference.loc[TUESDAY_2PM, "expected"]


def test_a_finding_says_what_happened_in_plain_language():
    index = pd.date_range(end=TUESDAY_2PM, periods=9 * 168 + 1, freq="h")
    series = pd.Series(80.0, index=index)
    series[TUESDAY_2PM] = 400.0

    [finding] = series_detect(series, metric="sessions", start=TUESDAY_2PM)

    assert finding.explanation == (
        "Sessions 14:00–15:00 on Tue 3 Mar 2026 were 400, about 5.0× the usual 80 "
        "for a Tuesday afternoon."
    )
    assert (finding.observed, finding.expected) == (400.0, pytest.approx(80.0))
    assert finding.direction == Direction.SPIKE
    assert finding.severity == Severity.CRITICAL
    assert finding.window_end == TUESDAY_2PM + pd.Timedelta(hours=1)
    assert finding.band.low < 80 < finding.band.high < 400


def test_a_daily_drop_is_explained_per_weekday():
    index = pd.date_range(end="2026-03-03", periods=10 * 7, freq="D", tz="Europe/London")
    series = pd.Series(1000.0, index=index)
    series.iloc[-1] = 150.0

    [finding] = series_detect_mad(
        series, metric="orders", config=SeasonalConfig(frequency=DAY), start=index[-1]
    )

    assert finding.explanation == (
        "Orders on Tue 3 Mar 2026 were 150, about 85 % below the usual 1,000 for a Tuesday."
    )
    assert finding.direction == Direction.DROP


def test_a_mass_noun_takes_was():
    index = pd.date_range(end="2026-03-03", periods=10 * 7, freq="D", tz="Europe/London")
    series = pd.Series(1000.0, index=index)
    series.iloc[-1] = 150.0

    [finding] = series_detect_mad(
        series,
        metric="revenue_daily",
        config=SeasonalConfig(frequency=DAY, label="Revenue"),
        start=index[-1],
    )

    assert finding.explanation.startswith("Revenue on Tue 3 Mar 2026 was 150, ")


def test_bad_input_is_refused():
    duplicated = pd.Series([1.0, 2.0], index=pd.DatetimeIndex(["2026-01-01", "2026-01-01"]))

    with pytest.raises(ValueError, match="two values"):
        series_prepare(duplicated, frequency=HOUR)
    with pytest.raises(ValueError, match="frequency"):
        series_prepare(duplicated, frequency="minute")
    with pytest.raises(ValueError, match="DatetimeIndex"):
        series_prepare(pd.Series([1.0]), frequency=DAY)
    with pytest.raises(ValueError, match="method"):
        series_detect(duplicated, metric="x", method="prophet")


def test_holidays_are_dates_in_the_shops_timezone():
    index = pd.date_range("2026-01-05", periods=10 * 168, freq="h", tz="America/New_York")
    series = pd.Series(50.0, index=index)
    boxing_day = pd.Timestamp("2026-02-24 23:00", tz="America/New_York")
    series[boxing_day] = 0.0
    config = SeasonalConfig(holidays=frozenset({date(2026, 2, 24)}))

    assert series_detect_mad(series, metric="sessions", config=config) == []
    assert [f.window_start for f in series_detect_mad(series, metric="sessions")] == [boxing_day]
