"""The pure analysis of a phase (notifications/experiments/analysis.py) and its verdict, on
simulated per-unit frames (fixed seeds), checked against independent pandas/scipy computations."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from notifications.experiments.analysis import (
    AnalysisConfig,
    ArmSpec,
    arm_codes,
    metric_analyse,
    results_analyse,
)
from notifications.experiments.verdict import verdict_write

START = datetime(2026, 3, 2, tzinfo=UTC)
END = datetime(2026, 3, 12, tzinfo=UTC)
ARMS = (ArmSpec("control", "A", 0.5, True), ArmSpec("b", "B", 0.5, False))


def frame_of(
    variants, *, revenue=None, pre_revenue=None, orders=None, pre_orders=None, seed=0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(variants)
    zeros = np.zeros(n)
    days = rng.integers(0, 10, n)
    return pd.DataFrame(
        {
            "variant": variants,
            "first_exposed_at": pd.Timestamp("2026-03-02") + pd.to_timedelta(days, unit="D"),
            "orders": zeros if orders is None else orders,
            "pre_orders": zeros if pre_orders is None else pre_orders,
            "revenue": zeros if revenue is None else revenue,
            "pre_revenue": zeros if pre_revenue is None else pre_revenue,
            "add_to_cart": zeros,
            "pre_add_to_cart": zeros,
            "bounce": zeros,
        }
    )


def config(**overrides) -> AnalysisConfig:
    return AnalysisConfig(
        **{
            "arms": ARMS,
            "primary": {"kind": "revenue_per_unit"},
            "winsor_percentile": 100.0,
            "is_sequential": False,
        }
        | overrides
    )


def correlated(n_per_arm: int, rho: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    n = 2 * n_per_arm
    pre = rng.normal(50, 10, n)
    post = 50 + rho * (pre - 50) + np.sqrt(1 - rho**2) * rng.normal(0, 10, n)
    variants = np.repeat(["control", "b"], n_per_arm)
    return variants, post, pre


def test_welch_on_revenue_matches_scipy():
    variants, post, _ = correlated(400, 0.0)
    frame = frame_of(variants, revenue=post)

    outcome = metric_analyse(
        frame=frame,
        codes=arm_codes(frame, ARMS),
        metric={"kind": "revenue_per_unit"},
        config=config(),
    )

    expected = stats.ttest_ind(post[400:], post[:400], equal_var=False)
    treatment = outcome.per_arm[1]
    assert outcome.per_arm[0]["mean"] == pytest.approx(post[:400].mean())
    assert treatment["absolute"]["estimate"] == pytest.approx(post[400:].mean() - post[:400].mean())
    assert treatment["p_value"] == pytest.approx(expected.pvalue, rel=1e-6)
    assert treatment["cuped"] is None


def test_cuped_narrows_the_interval_when_the_pre_period_correlates():
    variants, post, pre = correlated(2000, 0.7)
    with_pre = frame_of(variants, revenue=post, pre_revenue=pre)
    without = frame_of(variants, revenue=post)
    codes = arm_codes(with_pre, ARMS)

    adjusted = metric_analyse(
        frame=with_pre, codes=codes, metric={"kind": "revenue_per_unit"}, config=config()
    ).per_arm[1]
    raw = metric_analyse(
        frame=without, codes=codes, metric={"kind": "revenue_per_unit"}, config=config()
    ).per_arm[1]

    slope = np.polyfit(pre, post, 1)[0]
    assert adjusted["cuped"]["theta"] == pytest.approx(slope)
    assert adjusted["cuped"]["variance_reduction"] == pytest.approx(0.49, abs=0.05)
    width = adjusted["absolute"]["ci_high"] - adjusted["absolute"]["ci_low"]
    raw_width = raw["absolute"]["ci_high"] - raw["absolute"]["ci_low"]
    assert width < 0.8 * raw_width


def test_aov_is_revenue_over_orders_per_arm():
    variants = np.repeat(["control", "b"], 3)
    frame = frame_of(
        variants, revenue=np.array([10, 0, 30, 20, 20, 0.0]), orders=np.array([1, 0, 2, 1, 1, 0.0])
    )

    outcome = metric_analyse(
        frame=frame, codes=arm_codes(frame, ARMS), metric={"kind": "aov"}, config=config()
    )

    assert [arm["mean"] for arm in outcome.per_arm] == pytest.approx([40 / 3, 20.0])


def test_revenue_is_winsorised_at_the_pooled_percentile():
    variants = np.repeat(["control", "b"], 50)
    revenue = np.arange(100, dtype=float)
    revenue[99] = 1e6
    frame = frame_of(variants, revenue=revenue)

    outcome = metric_analyse(
        frame=frame,
        codes=arm_codes(frame, ARMS),
        metric={"kind": "revenue_per_unit"},
        config=config(winsor_percentile=99.0),
    )

    cap = np.percentile(revenue, 99.0)
    assert outcome.summary["winsor_cap"] == pytest.approx(cap)
    assert outcome.per_arm[1]["mean"] == pytest.approx(np.minimum(revenue[50:], cap).mean())


def test_srm_is_flagged_on_a_skewed_split_and_said_in_the_verdict():
    variants = np.repeat(["control", "b"], [1100, 900])
    frame = frame_of(variants, orders=(np.arange(2000) % 10 == 0).astype(float))

    result = results_analyse(
        frame=frame,
        exposed=[1100, 900],
        config=config(primary={"kind": "conversion"}),
        start=START,
        end=END,
    )
    verdict = verdict_write(result)

    expected = stats.chisquare([1100, 900], [1000, 1000])
    assert result["srm"]["is_mismatch"] is True
    assert result["srm"]["p_value"] == pytest.approx(expected.pvalue)
    assert "sample ratio mismatch (p = 7.7e-06)" in verdict


def test_verdict_speaks_in_points_and_asks_for_more_days():
    rng = np.random.default_rng(3)
    variants = np.repeat(["control", "b"], 20000)
    converted = np.concatenate([rng.random(20000) < 0.10, rng.random(20000) < 0.12])
    frame = frame_of(variants, orders=converted.astype(float))

    result = results_analyse(
        frame=frame,
        exposed=[20000, 20000],
        config=config(primary={"kind": "conversion"}, planned_mde=0.01),
        start=START,
        end=END,
    )
    verdict = verdict_write(result)

    treatment = result["arms"][1]["metrics"]["conversion"]
    difference = 100 * (converted[20000:].mean() - converted[:20000].mean())
    low, high = (100 * treatment["absolute"][k] for k in ("ci_low", "ci_high"))
    days = result["power"]["days_remaining"]
    assert days > 0
    assert verdict == (
        f"Variant B raised conversion by {difference:.1f} pp (95 % CI {low:.1f}–{high:.1f}); "
        f"keep collecting for {days} more days to reach the planned power."
    )


def test_guardrail_worsening_significantly_is_flagged():
    variants = np.repeat(["control", "b"], 5000)
    frame = frame_of(variants)
    frame["bounce"] = np.concatenate([np.arange(5000) % 10 < 3, np.arange(5000) % 10 < 5])

    result = results_analyse(
        frame=frame,
        exposed=[5000, 5000],
        config=config(guardrails=({"kind": "bounce"},)),
        start=START,
        end=END,
    )

    assert [(g["metric"], g["variant"]) for g in result["guardrails"]] == [("bounce", "b")]
    assert result["guardrails"][0]["estimate"] == pytest.approx(0.2)


def test_the_timeline_is_cumulative_by_day_of_first_exposure():
    variants, post, _ = correlated(500, 0.0)
    frame = frame_of(variants, revenue=post)

    points = results_analyse(
        frame=frame, exposed=[500, 500], config=config(), start=START, end=END
    )["timeline"]

    days = frame["first_exposed_at"].dt.date.astype(str)
    last = frame[days <= points[-1]["day"]]
    assert [p["day"] for p in points] == [f"2026-03-{d:02d}" for d in range(2, 12)]
    assert points[-1]["units"] == len(last) == 1000
    assert points[3]["units"] == int((days <= "2026-03-05").sum())
    assert points[-1]["absolute"]["estimate"] == pytest.approx(
        post[500:].mean() - post[:500].mean()
    )


def test_the_sequential_interval_is_wider_than_the_fixed_one():
    variants, post, _ = correlated(1000, 0.0)
    frame = frame_of(variants, revenue=post)
    codes = arm_codes(frame, ARMS)
    metric = {"kind": "revenue_per_unit"}

    fixed = metric_analyse(frame=frame, codes=codes, metric=metric, config=config()).per_arm[1]
    always_valid = metric_analyse(
        frame=frame, codes=codes, metric=metric, config=config(is_sequential=True)
    ).per_arm[1]

    assert always_valid["absolute"]["estimate"] == fixed["absolute"]["estimate"]
    assert always_valid["absolute"]["ci_low"] < fixed["absolute"]["ci_low"]
    assert always_valid["p_value"] >= fixed["p_value"]


def test_a_stopped_experiments_verdict_is_final():
    rng = np.random.default_rng(5)
    variants = np.repeat(["control", "b"], 500)
    frame = frame_of(variants, orders=(rng.random(1000) < 0.1).astype(float))
    result = results_analyse(
        frame=frame,
        exposed=[500, 500],
        config=config(primary={"kind": "conversion"}, planned_mde=0.01),
        start=START,
        end=END,
    )
    assert result["power"]["days_remaining"] > 0

    collecting = verdict_write(result)
    stopped = verdict_write(result | {"is_collecting": False})

    assert "yet" in collecting
    assert "keep collecting" in collecting
    assert stopped.startswith("No variant differed significantly from control on conversion (")
    assert stopped.endswith("; it stopped before reaching the planned power.")
    assert verdict_write({**result, "arms": [], "is_collecting": False}) == "No units were exposed."
