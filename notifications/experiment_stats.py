"""Statistics for A/B experiments: pure functions over per-arm summaries (numpy + scipy only).

Every formula, with its reference, is written out in docs/experiments.md ("Statistics"). The
conventions follow GrowthBook's gbstats so that its published test cases can check this code:

- an arm is summarised by its units ``n``, the mean of the metric and the *variance of that mean*
  (``mean_variance``, the squared standard error), so means, proportions, ratio metrics and
  CUPED-adjusted means all go through the same comparison code;
- the relative effect is ``(treatment - control) / |control|`` ("uplift", 0.05 = +5 %);
- intervals are two-sided at level ``1 - alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
# Statsig caps revenue-like metrics at the 99.9th percentile of the pooled arms by default.
WINSOR_PERCENTILE = 99.9
# GrowthBook's default tuning sample size N* for the sequential confidence sequence.
SEQUENTIAL_TUNING_N = 5000
SRM_P_THRESHOLD = 0.001
MIN_UNITS_PER_ARM = 50
MIN_CONVERSIONS_PER_ARM = 5

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ArmEstimate:
    """One arm: units, the metric's mean, and the variance of that mean (standard error²)."""

    n: int
    mean: float
    mean_variance: float

    @property
    def unit_variance(self) -> float:
        """The per-unit variance implied by the standard error (``mean_variance * n``)."""
        return self.mean_variance * self.n


@dataclass(frozen=True)
class Effect:
    """A point estimate of treatment minus (or over) control, its standard error and Welch df."""

    estimate: float
    std_error: float
    df: float


@dataclass(frozen=True)
class Comparison:
    """An effect with its interval and p-value, fixed-horizon or sequential."""

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    is_sequential: bool

    def is_significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


# -- arms ---------------------------------------------------------------------------------------


def arm_from_values(values: npt.ArrayLike) -> ArmEstimate:
    """Summarise per-unit metric values (sample variance, ddof = 1)."""
    array = np.asarray(values, dtype=np.float64)
    n = int(array.size)
    variance = float(array.var(ddof=1)) if n > 1 else 0.0
    return ArmEstimate(
        n=n, mean=float(array.mean()) if n else 0.0, mean_variance=_per_n(variance, n)
    )


def arm_from_sums(*, n: int, total: float, sum_squares: float) -> ArmEstimate:
    """Summarise from SQL aggregates: ``n``, ``Σy`` and ``Σy²``."""
    if n == 0:
        return ArmEstimate(n=0, mean=0.0, mean_variance=0.0)
    variance = (sum_squares - total**2 / n) / (n - 1) if n > 1 else 0.0
    return ArmEstimate(n=n, mean=total / n, mean_variance=_per_n(variance, n))


def arm_from_conversions(*, n: int, conversions: int) -> ArmEstimate:
    """A proportion: a mean of 0/1 values with the Bernoulli variance ``p (1 - p)``."""
    rate = conversions / n if n else 0.0
    return ArmEstimate(n=n, mean=rate, mean_variance=_per_n(rate * (1 - rate), n))


def _per_n(variance: float, n: int) -> float:
    return variance / n if n else 0.0


@dataclass(frozen=True)
class RatioMoments:
    """Per-unit numerator M and denominator D of a ratio metric (e.g. revenue / orders)."""

    n: int
    mean_m: float
    mean_d: float
    var_m: float
    var_d: float
    cov_md: float


def ratio_moments_from_values(numerator: npt.ArrayLike, denominator: npt.ArrayLike) -> RatioMoments:
    m = np.asarray(numerator, dtype=np.float64)
    d = np.asarray(denominator, dtype=np.float64)
    cov = np.cov(m, d, ddof=1)
    return RatioMoments(
        n=int(m.size),
        mean_m=float(m.mean()),
        mean_d=float(d.mean()),
        var_m=float(cov[0, 0]),
        var_d=float(cov[1, 1]),
        cov_md=float(cov[0, 1]),
    )


def variance_of_ratio(
    *, mean_m: float, var_m: float, mean_d: float, var_d: float, cov_md: float
) -> float:
    """Delta method: Var(M/D) ≈ Vm/μd² + Vd·μm²/μd⁴ − 2·Cmd·μm/μd³."""
    if mean_d == 0:
        return 0.0
    return var_m / mean_d**2 + var_d * mean_m**2 / mean_d**4 - 2 * cov_md * mean_m / mean_d**3


def arm_from_ratio(moments: RatioMoments) -> ArmEstimate:
    """A ratio metric ΣM/ΣD per arm, its variance by the delta method over the unit means."""
    n = moments.n
    if n == 0 or moments.mean_d == 0:
        return ArmEstimate(n=n, mean=0.0, mean_variance=0.0)
    return ArmEstimate(
        n=n,
        mean=moments.mean_m / moments.mean_d,
        mean_variance=variance_of_ratio(
            mean_m=moments.mean_m,
            var_m=moments.var_m / n,
            mean_d=moments.mean_d,
            var_d=moments.var_d / n,
            cov_md=moments.cov_md / n,
        ),
    )


# -- winsorising --------------------------------------------------------------------------------


def winsor_cap(arms: Sequence[npt.ArrayLike], *, percentile: float = WINSOR_PERCENTILE) -> float:
    """The cap: the given percentile of all arms' values pooled (so every arm gets the same cap)."""
    pooled = np.concatenate([np.asarray(arm, dtype=np.float64) for arm in arms])
    return float(np.percentile(pooled, percentile))


def winsorize(
    arms: Sequence[npt.ArrayLike], *, percentile: float = WINSOR_PERCENTILE
) -> tuple[list[FloatArray], float]:
    """Cap every arm's values at the pooled percentile; returns the capped arms and the cap."""
    cap = winsor_cap(arms, percentile=percentile)
    return [np.minimum(np.asarray(arm, dtype=np.float64), cap) for arm in arms], cap


# -- effects ------------------------------------------------------------------------------------


def welch_df(control: ArmEstimate, treatment: ArmEstimate) -> float:
    """Welch–Satterthwaite degrees of freedom from the variances of the two means."""
    v_a, v_b = control.mean_variance, treatment.mean_variance
    denominator = v_a**2 / max(control.n - 1, 1) + v_b**2 / max(treatment.n - 1, 1)
    if denominator == 0:
        return math.inf
    return (v_a + v_b) ** 2 / denominator


def absolute_effect(control: ArmEstimate, treatment: ArmEstimate) -> Effect:
    """Difference of means; its variance is the sum of the two means' variances."""
    return Effect(
        estimate=treatment.mean - control.mean,
        std_error=math.sqrt(control.mean_variance + treatment.mean_variance),
        df=welch_df(control, treatment),
    )


def relative_effect(control: ArmEstimate, treatment: ArmEstimate) -> Effect:
    """Uplift (μb − μa)/|μa|; variance by the delta method for μb/μa (independent arms)."""
    if control.mean == 0:
        raise ValueError("relative effect needs a non-zero control mean")
    variance = variance_of_ratio(
        mean_m=treatment.mean,
        var_m=treatment.mean_variance,
        mean_d=control.mean,
        var_d=control.mean_variance,
        cov_md=0.0,
    )
    return Effect(
        estimate=(treatment.mean - control.mean) / abs(control.mean),
        std_error=math.sqrt(variance),
        df=welch_df(control, treatment),
    )


def fixed_horizon(effect: Effect, *, alpha: float = ALPHA) -> Comparison:
    """Two-sided Student t interval and p-value with the Welch df."""
    if effect.std_error == 0:
        return _degenerate(effect, is_sequential=False)
    quantile = float(stats.t.ppf(1 - alpha / 2, effect.df))
    t_statistic = effect.estimate / effect.std_error
    return Comparison(
        estimate=effect.estimate,
        std_error=effect.std_error,
        ci_low=effect.estimate - quantile * effect.std_error,
        ci_high=effect.estimate + quantile * effect.std_error,
        p_value=float(2 * stats.t.sf(abs(t_statistic), effect.df)),
        df=effect.df,
        is_sequential=False,
    )


def _degenerate(effect: Effect, *, is_sequential: bool) -> Comparison:
    return Comparison(
        estimate=effect.estimate,
        std_error=0.0,
        ci_low=effect.estimate,
        ci_high=effect.estimate,
        p_value=1.0,
        df=effect.df,
        is_sequential=is_sequential,
    )


# -- sequential testing -------------------------------------------------------------------------


def sequential_rho(*, alpha: float = ALPHA, tuning_n: float = SEQUENTIAL_TUNING_N) -> float:
    """Mixture parameter ρ that makes the boundary tightest at n = N* (Howard et al., eq. 161)."""
    log_term = -2 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1)) / tuning_n)


def sequential_halfwidth(
    *, std_error: float, n: int, alpha: float = ALPHA, tuning_n: float = SEQUENTIAL_TUNING_N
) -> float:
    """Half-width of the normal-mixture confidence sequence (Waudby-Smith et al. 2023, eq. 9).

    ``n`` is the units in both arms; ``s² = std_error² · n`` is the per-unit variance scale.
    """
    rho2 = sequential_rho(alpha=alpha, tuning_n=tuning_n) ** 2
    s2 = std_error**2 * n
    spread = 2 * (n * rho2 + 1) / (n**2 * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha)
    return math.sqrt(s2 * spread)


def sequential_p_value(
    *, effect: Effect, n: int, alpha: float = ALPHA, tuning_n: float = SEQUENTIAL_TUNING_N
) -> float:
    """Always-valid p-value: 1 / the mixture e-value, capped at 1 (Howard et al., eq. 155)."""
    rho2 = sequential_rho(alpha=alpha, tuning_n=tuning_n) ** 2
    z2_n = effect.estimate**2 * n / effect.std_error**2
    growth = n * rho2 + 1
    log_e_value = rho2 * z2_n / (2 * growth) - 0.5 * math.log(growth)
    return min(1.0, math.exp(-log_e_value))


def sequential(
    effect: Effect, *, n: int, alpha: float = ALPHA, tuning_n: float = SEQUENTIAL_TUNING_N
) -> Comparison:
    """The always-valid interval: safe to look at after every day of data."""
    if effect.std_error == 0:
        return _degenerate(effect, is_sequential=True)
    halfwidth = sequential_halfwidth(
        std_error=effect.std_error, n=n, alpha=alpha, tuning_n=tuning_n
    )
    return Comparison(
        estimate=effect.estimate,
        std_error=effect.std_error,
        ci_low=effect.estimate - halfwidth,
        ci_high=effect.estimate + halfwidth,
        p_value=sequential_p_value(effect=effect, n=n, alpha=alpha, tuning_n=tuning_n),
        df=effect.df,
        is_sequential=True,
    )


def compare(
    control: ArmEstimate,
    treatment: ArmEstimate,
    *,
    relative: bool = False,
    is_sequential: bool = False,
    alpha: float = ALPHA,
    tuning_n: float = SEQUENTIAL_TUNING_N,
) -> Comparison:
    """Treatment against control: absolute or relative, fixed-horizon or sequential."""
    effect = (
        relative_effect(control, treatment) if relative else absolute_effect(control, treatment)
    )
    if is_sequential:
        return sequential(effect, n=control.n + treatment.n, alpha=alpha, tuning_n=tuning_n)
    return fixed_horizon(effect, alpha=alpha)


# -- CUPED --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CupedMoments:
    """One arm's metric y (after exposure) and covariate x (the same metric before exposure)."""

    n: int
    mean_y: float
    mean_x: float
    var_y: float
    var_x: float
    cov_xy: float


@dataclass(frozen=True)
class CupedResult:
    theta: float
    control: ArmEstimate
    treatment: ArmEstimate
    control_raw: ArmEstimate
    treatment_raw: ArmEstimate
    # 1 − Var(adjusted difference) / Var(raw difference); ≈ ρ² for a covariate correlated ρ.
    variance_reduction: float


def cuped_moments_from_values(y: npt.ArrayLike, x: npt.ArrayLike) -> CupedMoments:
    moments = ratio_moments_from_values(y, x)
    return CupedMoments(
        n=moments.n,
        mean_y=moments.mean_m,
        mean_x=moments.mean_d,
        var_y=moments.var_m,
        var_x=moments.var_d,
        cov_xy=moments.cov_md,
    )


def cuped_moments_from_sums(
    *,
    n: int,
    y_sum: float,
    y_sum_squares: float,
    x_sum: float,
    x_sum_squares: float,
    xy_sum: float,
) -> CupedMoments:
    """From SQL aggregates Σy, Σy², Σx, Σx², Σxy (sample (co)variances, ddof = 1)."""
    if n < 2:
        raise ValueError("CUPED needs at least two units per arm")
    return CupedMoments(
        n=n,
        mean_y=y_sum / n,
        mean_x=x_sum / n,
        var_y=(y_sum_squares - y_sum**2 / n) / (n - 1),
        var_x=(x_sum_squares - x_sum**2 / n) / (n - 1),
        cov_xy=(xy_sum - y_sum * x_sum / n) / (n - 1),
    )


def cuped_theta(control: CupedMoments, treatment: CupedMoments) -> float:
    """θ = Cov(y, x) / Var(x) on both arms pooled (one θ for all arms keeps it unbiased)."""
    n = control.n + treatment.n
    arms = (control, treatment)
    mean_y = sum(arm.n * arm.mean_y for arm in arms) / n
    mean_x = sum(arm.n * arm.mean_x for arm in arms) / n
    # Σ(x − x̄)² over the pool = Σ within-arm sums of squares + the between-arm part.
    ss_x = sum((arm.n - 1) * arm.var_x + arm.n * (arm.mean_x - mean_x) ** 2 for arm in arms)
    sp_xy = sum(
        (arm.n - 1) * arm.cov_xy + arm.n * (arm.mean_x - mean_x) * (arm.mean_y - mean_y)
        for arm in arms
    )
    return sp_xy / ss_x if ss_x > 0 else 0.0


def cuped_adjusted_variance(moments: CupedMoments, theta: float) -> float:
    """Per-unit Var(y − θx) = Var(y) + θ² Var(x) − 2θ Cov(y, x)."""
    return moments.var_y + theta**2 * moments.var_x - 2 * theta * moments.cov_xy


def cuped_arm(moments: CupedMoments, theta: float) -> ArmEstimate:
    """The adjusted arm: mean ȳ − θx̄ and the adjusted variance over n."""
    return ArmEstimate(
        n=moments.n,
        mean=moments.mean_y - theta * moments.mean_x,
        mean_variance=cuped_adjusted_variance(moments, theta) / moments.n,
    )


def cuped(control: CupedMoments, treatment: CupedMoments) -> CupedResult:
    theta = cuped_theta(control, treatment)
    adjusted = (cuped_arm(control, theta), cuped_arm(treatment, theta))
    raw = (cuped_arm(control, 0.0), cuped_arm(treatment, 0.0))
    raw_variance = raw[0].mean_variance + raw[1].mean_variance
    adjusted_variance = adjusted[0].mean_variance + adjusted[1].mean_variance
    return CupedResult(
        theta=theta,
        control=adjusted[0],
        treatment=adjusted[1],
        control_raw=raw[0],
        treatment_raw=raw[1],
        variance_reduction=1 - adjusted_variance / raw_variance if raw_variance else 0.0,
    )


def cuped_relative_effect(
    control: CupedMoments, treatment: CupedMoments, result: CupedResult
) -> Effect:
    """Uplift of the adjusted means over the *unadjusted* control mean, as GrowthBook does.

    Estimate (ȳb − θx̄b − ȳa + θx̄a)/|ȳa|; variance by the delta method with the gradient
    (1/ȳa, −θ/ȳa) for the treatment and (−ȳb/ȳa², θ/ȳa) for the control.
    """
    theta, base = result.theta, control.mean_y
    if base == 0:
        raise ValueError("relative effect needs a non-zero control mean")
    v_treatment = cuped_adjusted_variance(treatment, theta) / (treatment.n * base**2)
    g_mean = -treatment.mean_y / base**2
    g_cov = theta / base
    v_control = (
        g_mean**2 * control.var_y + g_cov**2 * control.var_x + 2 * g_mean * g_cov * control.cov_xy
    ) / control.n
    return Effect(
        estimate=(result.treatment.mean - result.control.mean) / abs(base),
        std_error=math.sqrt(v_treatment + v_control),
        df=welch_df(result.control, result.treatment),
    )


# -- Bayesian view ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianPrior:
    """Normal prior on the effect; ``proper=False`` is the flat (improper) prior."""

    mean: float = 0.0
    variance: float = 1.0
    proper: bool = False


@dataclass(frozen=True)
class BayesianResult:
    mean: float
    std: float
    ci_low: float
    ci_high: float
    chance_to_win: float
    # Expected loss of shipping control (E[max(Δ, 0)]) and of shipping treatment (E[max(−Δ, 0)]).
    risk_control: float
    risk_treatment: float


def bayesian(
    effect: Effect, *, prior: GaussianPrior | None = None, alpha: float = ALPHA
) -> BayesianResult:
    """Normal approximation: posterior of the effect from its estimate, standard error and prior."""
    if effect.std_error == 0:
        raise ValueError("the Bayesian view needs a non-zero standard error")
    prior = prior or GaussianPrior()
    data_precision = 1 / effect.std_error**2
    prior_precision = 1 / prior.variance if prior.proper else 0.0
    precision = data_precision + prior_precision
    mean = (effect.estimate * data_precision + prior.mean * prior_precision) / precision
    std = math.sqrt(1 / precision)
    z = mean / std
    density, below = float(stats.norm.pdf(z)), float(stats.norm.cdf(z))
    quantile = float(stats.norm.ppf(1 - alpha / 2))
    return BayesianResult(
        mean=mean,
        std=std,
        ci_low=mean - quantile * std,
        ci_high=mean + quantile * std,
        chance_to_win=below,
        risk_control=mean * below + std * density,
        risk_treatment=-mean * (1 - below) + std * density,
    )


# -- health checks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SrmResult:
    chi2: float
    p_value: float
    is_mismatch: bool


def sample_ratio_mismatch(
    units: Sequence[int], weights: Sequence[float], *, threshold: float = SRM_P_THRESHOLD
) -> SrmResult:
    """Pearson χ² of the units per arm against the planned weights (k − 1 df)."""
    observed = np.asarray(units, dtype=np.float64)
    shares = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    expected = shares * observed.sum()
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    p_value = float(stats.chi2.sf(chi2, observed.size - 1))
    return SrmResult(chi2=chi2, p_value=p_value, is_mismatch=p_value < threshold)


@dataclass(frozen=True)
class DataWarning:
    arm: int
    code: str
    detail: str


def data_warnings(
    units: Sequence[int],
    conversions: Sequence[int] | None = None,
    *,
    min_units: int = MIN_UNITS_PER_ARM,
    min_conversions: int = MIN_CONVERSIONS_PER_ARM,
) -> list[DataWarning]:
    """Arms with too little data for the normal approximations to be trusted."""
    warnings = [
        DataWarning(arm=arm, code="few_units", detail=f"{count} units (< {min_units})")
        for arm, count in enumerate(units)
        if count < min_units
    ]
    warnings += [
        DataWarning(
            arm=arm, code="few_conversions", detail=f"{count} conversions (< {min_conversions})"
        )
        for arm, count in enumerate(conversions or ())
        if count < min_conversions
    ]
    return warnings


# -- planning -----------------------------------------------------------------------------------


def power_at(*, std: float, mde: float, n_per_arm: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided z-test for an absolute difference ``mde`` (both tails counted)."""
    shift = abs(mde) / (std * math.sqrt(2 / n_per_arm))
    z = float(stats.norm.ppf(1 - alpha / 2))
    return float(stats.norm.sf(z - shift) + stats.norm.cdf(-z - shift))


def sample_size_per_arm(
    *, std: float, mde: float, alpha: float = ALPHA, power: float = POWER
) -> int:
    """Units per arm (equal arms) for ``power`` at ``mde``, rounded up.

    Starts from n₀ = 2 σ² (z₁₋α/₂ + z_power)² / δ² (one tail) and solves ``power_at(n) = power``
    with both tails counted, so it agrees with statsmodels' NormalIndPower.
    """
    z_alpha = float(stats.norm.ppf(1 - alpha / 2))
    z_power = float(stats.norm.ppf(power))
    one_tail = 2 * std**2 * (z_alpha + z_power) ** 2 / mde**2
    exact = optimize.brentq(
        lambda n: power_at(std=std, mde=mde, n_per_arm=n, alpha=alpha) - power,
        one_tail / 2,
        one_tail,
    )
    return math.ceil(exact)


def proportion_std(rate: float) -> float:
    """Per-unit standard deviation of a conversion at ``rate``: √(p (1 − p))."""
    return math.sqrt(rate * (1 - rate))


def days_remaining(*, units_needed: int, units_so_far: int, units_per_day: float) -> int | None:
    """Whole days until ``units_needed``; None when no traffic arrives."""
    missing = max(units_needed - units_so_far, 0)
    if missing == 0:
        return 0
    if units_per_day <= 0:
        return None
    return math.ceil(missing / units_per_day)
