"""The analysis of one experiment phase: per-unit metric values in, the results document out.

Pure (numpy and pandas over the frame `notifications.experiments.metrics` reads; the formulas are
`notifications.experiment_stats`'). Every per-arm quantity is a sum over units taken with
`np.bincount` on the arm codes, so the cost is a few passes over each column whatever the number
of units: no per-unit Python. docs/experiments.md, "Metrics" and "Results", says what is computed.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from notifications import experiment_stats as st

FloatArray = npt.NDArray[np.float64]
PROPORTIONS = frozenset({"conversion", "add_to_cart_rate", "bounce"})
LOWER_IS_BETTER = frozenset({"bounce"})
LABELS = {
    "conversion": "conversion",
    "revenue_per_unit": "revenue per unit",
    "aov": "average order value",
    "add_to_cart_rate": "add-to-cart rate",
    "bounce": "bounce rate",
}
DAY = np.timedelta64(1, "D")


@dataclass(frozen=True, slots=True)
class ArmSpec:
    key: str
    name: str
    weight: float
    is_control: bool


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    arms: tuple[ArmSpec, ...]
    primary: dict[str, str]
    secondary: tuple[dict[str, str], ...] = ()
    guardrails: tuple[dict[str, str], ...] = ()
    winsor_percentile: float = st.WINSOR_PERCENTILE
    is_sequential: bool = True
    planned_mde: float | None = None
    alpha: float = st.ALPHA
    tuning_n: float = st.SEQUENTIAL_TUNING_N


def metric_name(metric: dict[str, str]) -> str:
    if metric["kind"] == "custom_event_count":
        return f"custom_event_count:{metric['event']}"
    return metric["kind"]


def metric_label(metric: dict[str, str]) -> str:
    if metric["kind"] == "custom_event_count":
        return f"{metric['event']} events per unit"
    return LABELS[metric["kind"]]


def _capped(values: FloatArray, percentile: float) -> tuple[FloatArray, float | None]:
    """Winsorise at the pooled percentile (experiment_stats.winsor_cap); empty stays as is."""
    if values.size == 0 or percentile >= 100:
        return values, None
    cap = float(np.percentile(values, percentile))
    return np.minimum(values, cap), cap


def metric_columns(
    frame: pd.DataFrame, metric: dict[str, str], percentile: float
) -> tuple[FloatArray, FloatArray | None, float | None]:
    """The unit values y, the covariate x (the pre-exposure value for CUPED, the denominator
    for AOV, None for bounce) and the winsor cap applied to revenue."""
    kind = metric["kind"]
    if kind == "conversion":
        return _flag(frame["orders"]), _flag(frame["pre_orders"]), None
    if kind == "add_to_cart_rate":
        return _flag(frame["add_to_cart"]), _flag(frame["pre_add_to_cart"]), None
    if kind == "bounce":
        return frame["bounce"].to_numpy(np.float64), None, None
    if kind == "custom_event_count":
        column = f"event:{metric['event']}"
        return frame[column].to_numpy(np.float64), frame[f"pre_{column}"].to_numpy(np.float64), None
    revenue, cap = _capped(frame["revenue"].to_numpy(np.float64), percentile)
    if kind == "aov":
        return revenue, frame["orders"].to_numpy(np.float64), cap
    pre, _ = _capped(frame["pre_revenue"].to_numpy(np.float64), percentile)
    return revenue, pre, cap


def _flag(column: pd.Series) -> FloatArray:
    return (column.to_numpy() > 0).astype(np.float64)


@dataclass(frozen=True, slots=True)
class Sums:
    """Per-arm sums of y, y², x, x², xy (arrays indexed by arm)."""

    n: FloatArray
    y: FloatArray
    yy: FloatArray
    x: FloatArray
    xx: FloatArray
    xy: FloatArray

    def arm(self, i: int) -> tuple[int, float, float, float, float, float]:
        return (int(self.n[i]), self.y[i], self.yy[i], self.x[i], self.xx[i], self.xy[i])


def sums_by(codes: npt.NDArray[np.intp], size: int, y: FloatArray, x: FloatArray | None) -> Sums:
    x = np.zeros_like(y) if x is None else x

    def total(weights: FloatArray | None) -> FloatArray:
        return np.bincount(codes, weights=weights, minlength=size).astype(np.float64)

    return Sums(
        n=total(None), y=total(y), yy=total(y * y), x=total(x), xx=total(x * x), xy=total(x * y)
    )


def _variance(n: int, total: float, squares: float) -> float:
    # Clamped: the sums' rounding can leave a constant column a hair below zero.
    return max((squares - total * total / n) / (n - 1), 0.0) if n > 1 else 0.0


def _cuped_moments(sums: Sums, i: int) -> st.CupedMoments:
    n, y, yy, x, xx, xy = sums.arm(i)
    return st.CupedMoments(
        n=n,
        mean_y=y / n,
        mean_x=x / n,
        var_y=_variance(n, y, yy),
        var_x=_variance(n, x, xx),
        cov_xy=(xy - x * y / n) / (n - 1) if n > 1 else 0.0,
    )


def pooled_theta(sums: Sums) -> float:
    """θ = Cov(y, x)/Var(x) over every unit of every arm pooled (one θ for all arms)."""
    n, y, x = sums.n.sum(), sums.y.sum(), sums.x.sum()
    ss_x = sums.xx.sum() - x * x / n if n else 0.0
    sp_xy = sums.xy.sum() - x * y / n if n else 0.0
    return float(sp_xy / ss_x) if ss_x > 1e-12 else 0.0


def _ratio_arm(sums: Sums, i: int) -> st.ArmEstimate:
    n, m, mm, d, dd, md = sums.arm(i)
    if n < 2 or d == 0:
        return st.ArmEstimate(n=n, mean=0.0, mean_variance=0.0)
    return st.arm_from_ratio(
        st.RatioMoments(
            n=n,
            mean_m=m / n,
            mean_d=d / n,
            var_m=_variance(n, m, mm),
            var_d=_variance(n, d, dd),
            cov_md=(md - m * d / n) / (n - 1),
        )
    )


def _interval(comparison: st.Comparison | None, scale: float = 1.0) -> dict[str, float] | None:
    if comparison is None:
        return None
    return {
        "estimate": comparison.estimate * scale,
        "ci_low": comparison.ci_low * scale,
        "ci_high": comparison.ci_high * scale,
    }


def _judge(effect: st.Effect, n: int, config: AnalysisConfig) -> st.Comparison:
    if config.is_sequential:
        return st.sequential(effect, n=n, alpha=config.alpha, tuning_n=config.tuning_n)
    return st.fixed_horizon(effect, alpha=config.alpha)


def compare_arm(
    *,
    kind: str,
    sums: Sums,
    control: int,
    treatment: int,
    theta: float | None,
    config: AnalysisConfig,
) -> dict[str, Any]:
    """One treatment arm against control on one metric: the effects, p-value, Bayesian chance,
    and the CUPED variance reduction when a covariate is used (`theta` not None)."""
    n = int(sums.n[control] + sums.n[treatment])
    if min(sums.n[control], sums.n[treatment]) < 2:
        return {"absolute": None, "relative": None, "p_value": None, "is_significant": False}
    cuped = None
    if kind == "aov":
        arm_c, arm_t = _ratio_arm(sums, control), _ratio_arm(sums, treatment)
        absolute = st.absolute_effect(arm_c, arm_t)
        relative = st.relative_effect(arm_c, arm_t) if arm_c.mean else None
    elif theta is not None:
        moments_c, moments_t = _cuped_moments(sums, control), _cuped_moments(sums, treatment)
        adjusted = (st.cuped_arm(moments_c, theta), st.cuped_arm(moments_t, theta))
        raw = (st.cuped_arm(moments_c, 0.0), st.cuped_arm(moments_t, 0.0))
        raw_variance = raw[0].mean_variance + raw[1].mean_variance
        reduction = 1 - (adjusted[0].mean_variance + adjusted[1].mean_variance) / raw_variance
        result = st.CupedResult(theta, *adjusted, *raw, variance_reduction=reduction)
        absolute = st.absolute_effect(*adjusted)
        relative = (
            st.cuped_relative_effect(moments_c, moments_t, result) if moments_c.mean_y else None
        )
        cuped = {"theta": theta, "variance_reduction": reduction if raw_variance else 0.0}
    else:
        arm_c = st.arm_from_sums(
            n=int(sums.n[control]), total=sums.y[control], sum_squares=sums.yy[control]
        )
        arm_t = st.arm_from_sums(
            n=int(sums.n[treatment]), total=sums.y[treatment], sum_squares=sums.yy[treatment]
        )
        absolute = st.absolute_effect(arm_c, arm_t)
        relative = st.relative_effect(arm_c, arm_t) if arm_c.mean else None
    judged = _judge(absolute, n, config)
    chance = None
    if absolute.std_error > 0:
        chance = st.bayesian(absolute, alpha=config.alpha).chance_to_win
        chance = 1 - chance if kind in LOWER_IS_BETTER else chance
    return {
        "absolute": _interval(judged),
        "relative": _interval(_judge(relative, n, config) if relative else None),
        "p_value": judged.p_value,
        "is_significant": judged.is_significant(),
        "chance_to_beat_control": chance,
        "cuped": cuped,
    }


@dataclass(frozen=True, slots=True)
class MetricOutcome:
    name: str
    summary: dict[str, Any]
    per_arm: list[dict[str, Any]]


def metric_analyse(
    *,
    frame: pd.DataFrame,
    codes: npt.NDArray[np.intp],
    metric: dict[str, str],
    config: AnalysisConfig,
) -> MetricOutcome:
    """Means per arm and every treatment arm against control on one metric."""
    kind = metric["kind"]
    y, x, cap = metric_columns(frame, metric, config.winsor_percentile)
    size = len(config.arms)
    sums = sums_by(codes, size, y, x)
    theta = None
    if x is not None and kind != "aov":
        theta = pooled_theta(sums)
        theta = theta if theta != 0.0 else None
    control = next(i for i, arm in enumerate(config.arms) if arm.is_control)
    per_arm = []
    for i in range(size):
        n = int(sums.n[i])
        if kind == "aov":
            mean = float(sums.y[i] / sums.x[i]) if sums.x[i] else 0.0
        else:
            mean = float(sums.y[i] / n) if n else 0.0
        row: dict[str, Any] = {"mean": mean}
        if i != control:
            row |= compare_arm(
                kind=kind, sums=sums, control=control, treatment=i, theta=theta, config=config
            )
        per_arm.append(row)
    summary = {"name": metric_name(metric), "label": metric_label(metric), "winsor_cap": cap}
    return MetricOutcome(name=metric_name(metric), summary=summary, per_arm=per_arm)


def timeline(
    *,
    frame: pd.DataFrame,
    codes: npt.NDArray[np.intp],
    metric: dict[str, str],
    config: AnalysisConfig,
    start: datetime,
) -> list[dict[str, Any]]:
    """The primary metric's comparison, cumulative by day of first exposure: day d counts the
    units first exposed up to the end of day d (UTC days from the phase start), each with its
    metric over its whole window, analysed as the headline is."""
    if frame.empty:
        return []
    kind = metric["kind"]
    y, x, _ = metric_columns(frame, metric, config.winsor_percentile)
    x = np.zeros_like(y) if x is None else x
    exposed = frame["first_exposed_at"].to_numpy("datetime64[us]")
    origin = np.datetime64(start.replace(tzinfo=None), "us")
    days = np.maximum((exposed - origin) // DAY, 0).astype(np.intp)
    ndays, size = int(days.max()) + 1, len(config.arms)
    cell = codes * ndays + days

    def cumulative(weights: FloatArray | None) -> FloatArray:
        counts = np.bincount(cell, weights=weights, minlength=size * ndays).astype(np.float64)
        return counts.reshape(size, ndays).cumsum(axis=1)

    n, sy, syy = cumulative(None), cumulative(y), cumulative(y * y)
    sx, sxx, sxy = cumulative(x), cumulative(x * x), cumulative(x * y)
    control = next(i for i, arm in enumerate(config.arms) if arm.is_control)
    points = []
    for day in range(ndays):
        sums = Sums(n[:, day], sy[:, day], syy[:, day], sx[:, day], sxx[:, day], sxy[:, day])
        theta = None
        if kind not in ("aov", "bounce"):
            theta = pooled_theta(sums) or None
        for i, arm in enumerate(config.arms):
            if i == control:
                continue
            compared = compare_arm(
                kind=kind, sums=sums, control=control, treatment=i, theta=theta, config=config
            )
            points.append(
                {
                    "day": (start + day * pd.Timedelta(days=1)).date().isoformat(),
                    "variant": arm.key,
                    "units": int(sums.n[control] + sums.n[i]),
                    "absolute": compared["absolute"],
                    "relative": compared["relative"],
                }
            )
    return points


def arm_codes(frame: pd.DataFrame, arms: Sequence[ArmSpec]) -> npt.NDArray[np.intp]:
    """Each unit's arm index in `arms` (the frame holds only the phase's variants)."""
    categories = pd.Categorical(frame["variant"], categories=[arm.key for arm in arms])
    return np.asarray(categories.codes, dtype=np.intp)


def health(
    *,
    exposed: Sequence[int],
    units: Sequence[int],
    conversions: Sequence[int],
    config: AnalysisConfig,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The SRM check on every exposed unit against the weights, and the minimum-data warnings
    on the analysed units."""
    keys = [arm.key for arm in config.arms]
    srm = None
    if sum(exposed) > 0:
        result = st.sample_ratio_mismatch(exposed, [arm.weight for arm in config.arms])
        srm = {"chi2": result.chi2, "p_value": result.p_value, "is_mismatch": result.is_mismatch}
    warnings = [
        {"variant": keys[w.arm], "code": w.code, "detail": w.detail}
        for w in st.data_warnings(units, conversions)
    ]
    return srm, warnings


def guardrails_flag(
    outcomes: Sequence[MetricOutcome], config: AnalysisConfig
) -> list[dict[str, Any]]:
    """Guardrail metrics that a treatment arm worsens significantly (bounce up, others down)."""
    flagged = []
    for outcome in outcomes:
        lower_is_better = outcome.name in LOWER_IS_BETTER
        for arm, row in zip(config.arms, outcome.per_arm, strict=True):
            absolute = row.get("absolute")
            if arm.is_control or not row.get("is_significant") or absolute is None:
                continue
            if (absolute["estimate"] > 0) == lower_is_better:
                flagged.append(
                    {
                        "metric": outcome.name,
                        "variant": arm.key,
                        **absolute,
                        "p_value": row["p_value"],
                    }
                )
    return flagged


def power_check(
    *, frame: pd.DataFrame, codes: npt.NDArray[np.intp], config: AnalysisConfig, days_elapsed: float
) -> dict[str, Any] | None:
    """Units per arm needed for the planned relative MDE on the primary metric (the control's
    per-unit standard deviation, equal arms) and the days left at the traffic so far."""
    if config.planned_mde is None or frame.empty:
        return None
    control = next(i for i, arm in enumerate(config.arms) if arm.is_control)
    y, _, _ = metric_columns(frame, config.primary, config.winsor_percentile)
    values = y[codes == control]
    if values.size < 2 or values.mean() == 0 or values.std(ddof=1) == 0:
        return None
    mde = config.planned_mde * abs(float(values.mean()))
    needed = st.sample_size_per_arm(std=float(values.std(ddof=1)), mde=mde, alpha=config.alpha)
    so_far = int(np.bincount(codes, minlength=len(config.arms)).min())
    per_day = so_far / days_elapsed if days_elapsed > 0 else 0.0
    remaining = st.days_remaining(units_needed=needed, units_so_far=so_far, units_per_day=per_day)
    return {
        "planned_mde": config.planned_mde,
        "units_needed_per_arm": needed,
        "units_per_arm": so_far,
        "days_remaining": remaining,
    }


def results_analyse(
    *,
    frame: pd.DataFrame,
    exposed: Sequence[int],
    config: AnalysisConfig,
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    """The results document of one phase (without the verdict, `verdict.verdict_write`)."""
    codes = arm_codes(frame, config.arms)
    metrics = [config.primary, *config.secondary]
    outcomes = [metric_analyse(frame=frame, codes=codes, metric=m, config=config) for m in metrics]
    guards = [
        metric_analyse(frame=frame, codes=codes, metric=m, config=config) for m in config.guardrails
    ]
    units = np.bincount(codes, minlength=len(config.arms))
    converted = (frame["orders"].to_numpy() > 0).astype(np.float64)
    conversions = np.bincount(codes, weights=converted, minlength=len(config.arms)).astype(int)
    srm, warnings = health(
        exposed=exposed, units=units.tolist(), conversions=conversions.tolist(), config=config
    )
    arms = []
    for i, arm in enumerate(config.arms):
        arms.append(
            {
                "variant": arm.key,
                "name": arm.name,
                "is_control": arm.is_control,
                "weight": arm.weight,
                "exposed": int(exposed[i]),
                "units": int(units[i]),
                "conversions": int(conversions[i]),
                "metrics": {o.name: o.per_arm[i] for o in [*outcomes, *guards]},
            }
        )
    days_elapsed = (end - start).total_seconds() / 86400
    return {
        "primary_metric": metric_name(config.primary),
        "metrics": [o.summary for o in outcomes],
        "guardrail_metrics": [o.summary for o in guards],
        "is_sequential": config.is_sequential,
        "alpha": config.alpha,
        "arms": arms,
        "srm": srm,
        "warnings": warnings,
        "guardrails": guardrails_flag(guards, config),
        "power": power_check(frame=frame, codes=codes, config=config, days_elapsed=days_elapsed),
        "timeline": timeline(
            frame=frame, codes=codes, metric=config.primary, config=config, start=start
        ),
    }


def arms_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The arms table flat, one row per (variant, metric): what the CSV download holds."""
    rows = []
    for arm in document["arms"]:
        for name, values in arm["metrics"].items():
            absolute = values.get("absolute") or {}
            relative = values.get("relative") or {}
            rows.append(
                {
                    "variant": arm["variant"],
                    "is_control": arm["is_control"],
                    "exposed": arm["exposed"],
                    "units": arm["units"],
                    "conversions": arm["conversions"],
                    "metric": name,
                    "mean": values["mean"],
                    "difference": absolute.get("estimate"),
                    "difference_ci_low": absolute.get("ci_low"),
                    "difference_ci_high": absolute.get("ci_high"),
                    "uplift": relative.get("estimate"),
                    "uplift_ci_low": relative.get("ci_low"),
                    "uplift_ci_high": relative.get("ci_high"),
                    "p_value": values.get("p_value"),
                    "chance_to_beat_control": values.get("chance_to_beat_control"),
                    "is_significant": values.get("is_significant"),
                }
            )
    return rows


def json_ready(value: Any) -> Any:
    """numpy scalars as Python numbers, NaN and infinities as None (MariaDB's JSON refuses them)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
