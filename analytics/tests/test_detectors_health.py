"""Tracking health checks (pure: no database)."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from analytics.detectors.findings import Direction, Severity
from analytics.detectors.health import (
    HealthConfig,
    days_without_events,
    orders_untracked_check,
    pipeline_lag_check,
    rejections_check,
)

START = pd.Timestamp("2026-03-03 00:00", tz="UTC")
END = pd.Timestamp("2026-03-04 00:00", tz="UTC")


def test_untracked_shopify_orders_are_reported_with_examples():
    shopify = [f"#{n}" for n in range(1000, 1040)]
    tracked = shopify[:30]

    finding = orders_untracked_check(
        shopify_order_ids=shopify, tracked_order_ids=tracked, window_start=START, window_end=END
    )

    assert (finding.observed, finding.expected, finding.band.high) == (10.0, 0.0, 4.0)
    assert finding.severity == Severity.WARNING
    assert finding.explanation == (
        "10 of 40 Shopify orders (25 %) from 3 Mar 00:00 to 4 Mar 00:00 have no tracked "
        "purchase (e.g. #1030, #1031, #1032, …): the tracking snippet is missing from the "
        "checkout or blocked."
    )


def test_a_few_untracked_orders_are_normal():
    shopify = [f"#{n}" for n in range(100)]

    few = orders_untracked_check(
        shopify_order_ids=shopify, tracked_order_ids=shopify[:92], window_start=START,
        window_end=END,
    )  # fmt: skip
    none_tracked = orders_untracked_check(
        shopify_order_ids=shopify, tracked_order_ids=[], window_start=START, window_end=END
    )

    assert few is None
    assert none_tracked.severity == Severity.CRITICAL


def rejection_series(seed: int, jumps: int = 6):
    """Two weeks of hourly accepted counts with ~1 % rejected, and `jumps` hours at 10–60 %."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-02-02", periods=14 * 24, freq="h", tz="UTC")
    accepted = pd.Series(rng.poisson(2000, len(index)), index=index)
    rejected = pd.Series(rng.binomial(accepted, 0.01), index=index)
    injected = set(rng.choice(np.arange(48, len(index)), jumps, replace=False))
    for position in injected:
        rejected.iloc[position] = int(accepted.iloc[position] * rng.uniform(0.1, 0.6))
    return accepted, rejected, {index[p] for p in injected}


def test_rejection_jumps_are_found_with_precision_and_recall():
    flagged_count = true_positives = injected_count = 0
    for seed in range(10):
        accepted, rejected, injected = rejection_series(seed)
        flagged = {f.window_start for f in rejections_check(accepted=accepted, rejected=rejected)}
        flagged_count += len(flagged)
        true_positives += len(flagged & injected)
        injected_count += len(injected)

    assert true_positives / flagged_count >= 0.95
    assert true_positives / injected_count >= 0.95


def test_a_rejection_jump_is_explained():
    accepted, rejected, _ = rejection_series(1, jumps=0)
    at = accepted.index[100]
    rejected[at] = 500

    [finding] = rejections_check(accepted=accepted, rejected=rejected)

    share = 500 / (accepted[at] + 500)
    assert finding.window_start == at
    assert finding.observed == pytest.approx(share)
    assert finding.explanation.startswith(
        f"500 of {accepted[at] + 500:,} events from 6 Feb 04:00 were rejected "
        f"({share * 100:.1f} %), where 1.0 % is usual"
    )


@pytest.mark.parametrize(
    ("lag", "severity"), [(30, None), (120, Severity.WARNING), (900, Severity.CRITICAL)]
)
def test_pipeline_lag(lag, severity):
    finding = pipeline_lag_check(lag_seconds=lag, at=END)

    assert (finding.severity if finding else None) == severity


def test_pipeline_lag_is_explained():
    finding = pipeline_lag_check(lag_seconds=720, at=END)

    assert finding.explanation == (
        "Processing is 12 min behind at 4 Mar 00:00: new events are stored but not yet in "
        "sessions and analytics (late from 60 s, critical from 10 min)."
    )


def daily_counts(days: int = 60, level: int = 100, seed: int = 5) -> pd.Series:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-01-01", periods=days, freq="D")
    return pd.Series(rng.poisson(level, days), index=index)


def test_a_day_without_events_is_reported():
    counts = daily_counts()
    counts["2026-02-20"] = 0

    [finding] = days_without_events(counts)

    assert finding.window_start == pd.Timestamp("2026-02-20")
    assert finding.direction == Direction.DROP
    assert finding.severity == Severity.CRITICAL
    assert finding.explanation.startswith("No events at all on Friday 20 Feb 2026, where about")


def test_a_missing_day_counts_as_a_day_without_events():
    counts = daily_counts().drop(pd.Timestamp("2026-02-20"))

    assert [f.window_start for f in days_without_events(counts)] == [pd.Timestamp("2026-02-20")]


def test_no_eventless_day_on_a_holiday_or_in_a_quiet_shop():
    busy = daily_counts()
    busy["2026-02-20"] = 0
    quiet = daily_counts(level=3)

    holiday = days_without_events(
        busy, config=HealthConfig(holidays=frozenset({date(2026, 2, 20)}))
    )

    assert holiday == []
    assert (quiet == 0).any()
    assert days_without_events(quiet) == []
