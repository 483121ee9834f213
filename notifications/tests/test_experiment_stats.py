"""notifications/experiment_stats.py against independent computations and simulations.

References: scipy and statsmodels for the classical tests; GrowthBook's gbstats test suite
(growthbook/growthbook, packages/stats/tests, commit 8f1db44) for the worked examples of the
delta-method uplift, CUPED, the sequential confidence sequence and the Bayesian view. The
simulations use fixed seeds, so their rates are exact numbers for this numpy; the tolerances are
binomial (three standard errors of a rate over 2,000 experiments).
"""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.power import NormalIndPower, tt_ind_solve_power

from notifications import experiment_stats as es

EXPERIMENTS = 2000
DAYS = 10
UNITS_PER_ARM_PER_DAY = 100
ALPHA = 0.05
# Three binomial standard errors of a 5 % rejection rate over 2,000 experiments (≈ 0.0146).
REJECT_TOLERANCE = 3 * math.sqrt(ALPHA * (1 - ALPHA) / EXPERIMENTS)

# GrowthBook gbstats tests/frequentist/test_tests.py: TestTwoSidedTTest.setUp.
GB_CONTROL = {"n": 3407, "total": 1396.87, "sum_squares": 52377.9767}
GB_TREATMENT = {"n": 3461, "total": 2422.7, "sum_squares": 134698.29}


def rounded(comparison: es.Comparison) -> tuple[float, ...]:
    return tuple(
        round(value, 5)
        for value in (
            comparison.estimate,
            comparison.ci_low,
            comparison.ci_high,
            comparison.std_error,
            comparison.p_value,
        )
    )


def daily_sums(rng: np.random.Generator, *, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative Σy and Σy² per (experiment, arm, day) of N(10, 3²) units; arm 1 gets ``shift``."""
    values = rng.normal(10.0, 3.0, size=(EXPERIMENTS, 2, DAYS, UNITS_PER_ARM_PER_DAY))
    values[:, 1] += shift
    return values.sum(axis=-1).cumsum(axis=-1), (values**2).sum(axis=-1).cumsum(axis=-1)


def look(totals: np.ndarray, squares: np.ndarray, experiment: int, day: int) -> tuple:
    n = UNITS_PER_ARM_PER_DAY * (day + 1)
    return tuple(
        es.arm_from_sums(
            n=n,
            total=float(totals[experiment, arm, day]),
            sum_squares=float(squares[experiment, arm, day]),
        )
        for arm in (0, 1)
    )


# -- classical tests against scipy and statsmodels ----------------------------------------------


def test_welch_matches_scipy_ttest_ind():
    rng = np.random.default_rng(1)
    control, treatment = rng.lognormal(1.0, 1.0, 400), rng.lognormal(1.1, 1.2, 350)
    reference = stats.ttest_ind(treatment, control, equal_var=False)
    interval = reference.confidence_interval(0.95)

    result = es.compare(es.arm_from_values(control), es.arm_from_values(treatment))

    assert result.estimate == pytest.approx(treatment.mean() - control.mean(), rel=1e-12)
    assert result.estimate / result.std_error == pytest.approx(reference.statistic, rel=1e-10)
    assert result.df == pytest.approx(reference.df, rel=1e-10)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-9)


def test_arm_from_sums_equals_arm_from_values():
    values = np.random.default_rng(2).exponential(5.0, 300)

    from_sums = es.arm_from_sums(n=300, total=values.sum(), sum_squares=(values**2).sum())

    assert from_sums.mean == pytest.approx(es.arm_from_values(values).mean, rel=1e-12)
    assert from_sums.mean_variance == pytest.approx(
        es.arm_from_values(values).mean_variance, rel=1e-9
    )


def test_relative_and_absolute_uplift_match_growthbook():
    control, treatment = es.arm_from_sums(**GB_CONTROL), es.arm_from_sums(**GB_TREATMENT)

    relative = es.compare(control, treatment, relative=True)
    absolute = es.compare(control, treatment)

    assert rounded(relative) == (0.70732, -0.03526, 1.44989, 0.37879, 0.06191)
    assert rounded(absolute) == (0.29, 0.04538, 0.53462, 0.12478, 0.02016)


def test_proportions_match_growthbook_binomial_case():
    control = es.arm_from_conversions(n=28, conversions=14)
    treatment = es.arm_from_conversions(n=30, conversions=16)

    result = es.compare(control, treatment, relative=True)

    assert rounded(result) == (0.06667, -0.47767, 0.61101, 0.2717, 0.80707)


def test_proportions_match_statsmodels_wald():
    # Large arms: our interval uses Student t with Welch df, statsmodels the normal quantile.
    control = es.arm_from_conversions(n=9000, conversions=412)
    treatment = es.arm_from_conversions(n=9100, conversions=480)
    reference = sm_proportion.test_proportions_2indep(
        480, 9100, 412, 9000, method="wald", compare="diff"
    )
    low, high = sm_proportion.confint_proportions_2indep(
        480, 9100, 412, 9000, method="wald", compare="diff"
    )

    result = es.compare(control, treatment)

    assert result.estimate == pytest.approx(480 / 9100 - 412 / 9000, rel=1e-12)
    assert result.estimate / result.std_error == pytest.approx(reference.statistic, rel=1e-10)
    assert result.p_value == pytest.approx(reference.pvalue, abs=1e-4)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-5)


def test_sample_ratio_mismatch_matches_scipy_chisquare():
    units, weights = [5120, 4880, 2050], [0.4, 0.4, 0.2]
    expected = np.array(weights) * sum(units)
    reference = stats.chisquare(units, expected)

    result = es.sample_ratio_mismatch(units, weights)

    assert result.chi2 == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert result.is_mismatch is True


def test_sample_ratio_mismatch_flags_only_below_one_in_a_thousand():
    assert es.sample_ratio_mismatch([5000, 5100], [1, 1]).is_mismatch is False
    assert es.sample_ratio_mismatch([5000, 5400], [1, 1]).is_mismatch is True


def test_sample_size_and_power_match_statsmodels():
    std, mde = 12.0, 0.5
    reference_n = NormalIndPower().solve_power(effect_size=mde / std, alpha=0.05, power=0.8)
    reference_t = tt_ind_solve_power(effect_size=mde / std, alpha=0.05, power=0.8)

    n = es.sample_size_per_arm(std=std, mde=mde)

    assert n == math.ceil(reference_n)
    assert 0 <= reference_t - n < 3
    assert es.power_at(std=std, mde=mde, n_per_arm=n) == pytest.approx(
        NormalIndPower().power(effect_size=mde / std, nobs1=n, alpha=0.05), rel=1e-12
    )


def test_sample_size_for_a_conversion_rate():
    std = es.proportion_std(0.03)

    n = es.sample_size_per_arm(std=std, mde=0.006)

    assert n == math.ceil(
        NormalIndPower().solve_power(effect_size=0.006 / std, alpha=0.05, power=0.8)
    )


def test_days_remaining():
    assert es.days_remaining(units_needed=10_000, units_so_far=7_100, units_per_day=1_000) == 3
    assert es.days_remaining(units_needed=10_000, units_so_far=12_000, units_per_day=1_000) == 0
    assert es.days_remaining(units_needed=10_000, units_so_far=100, units_per_day=0) is None


def test_data_warnings_name_the_thin_arms():
    warnings = es.data_warnings([49, 50], [5, 4])

    assert [(w.arm, w.code) for w in warnings] == [(0, "few_units"), (1, "few_conversions")]


# -- ratio metrics and winsorising --------------------------------------------------------------


def test_ratio_with_unit_denominator_is_the_mean():
    revenue = np.random.default_rng(3).gamma(2.0, 30.0, 500)

    ratio = es.arm_from_ratio(es.ratio_moments_from_values(revenue, np.ones(500)))

    assert ratio.mean == pytest.approx(revenue.mean(), rel=1e-12)
    assert ratio.mean_variance == pytest.approx(es.arm_from_values(revenue).mean_variance, rel=1e-9)


def test_ratio_delta_method_standard_error_matches_simulation():
    rng = np.random.default_rng(4)
    orders = rng.poisson(1.5, size=(EXPERIMENTS, 400)) + 1
    revenue = orders * rng.gamma(3.0, 20.0, size=(EXPERIMENTS, 400))

    arms = [
        es.arm_from_ratio(es.ratio_moments_from_values(m, d))
        for m, d in zip(revenue, orders, strict=True)
    ]

    empirical_sd = np.std([arm.mean for arm in arms], ddof=1)
    mean_delta_sd = np.mean([math.sqrt(arm.mean_variance) for arm in arms])
    assert mean_delta_sd == pytest.approx(empirical_sd, rel=0.05)


def test_winsorize_caps_both_arms_at_the_pooled_percentile():
    rng = np.random.default_rng(5)
    control, treatment = rng.pareto(1.5, 5000), rng.pareto(1.5, 5000)

    (capped_control, capped_treatment), cap = es.winsorize([control, treatment])

    assert cap == np.percentile(np.concatenate([control, treatment]), 99.9)
    assert capped_control.max() <= cap
    assert capped_treatment.max() <= cap
    assert (capped_control == np.minimum(control, cap)).all()
    assert (capped_treatment == np.minimum(treatment, cap)).all()


# -- CUPED --------------------------------------------------------------------------------------


def test_cuped_reproduces_growthbook_worked_example():
    # gbstats TestSequentialTTest.test_sequential_test_runs_ra: regression-adjusted relative
    # uplift under the default sequential settings (alpha 0.05, N* 5000).
    control = es.cuped_moments_from_sums(
        n=3000,
        y_sum=1396.87,
        y_sum_squares=52377.9767,
        x_sum=16.87,
        x_sum_squares=527.9767,
        xy_sum=1,
    )
    treatment = es.cuped_moments_from_sums(
        n=3461, y_sum=2422.7, y_sum_squares=134698.29, x_sum=22.7, x_sum_squares=1348.29, xy_sum=1
    )

    result = es.cuped(control, treatment)
    effect = es.cuped_relative_effect(control, treatment, result)
    comparison = es.sequential(effect, n=6461)

    assert rounded(comparison)[:4] == (0.50338, -0.50969, 1.51646, 0.33341)


def test_cuped_theta_is_pooled_regression_slope():
    rng = np.random.default_rng(6)
    x = rng.normal(50.0, 10.0, 2000)
    y = 0.8 * x + rng.normal(0.0, 6.0, 2000)
    y[1000:] += 2.0

    theta = es.cuped_theta(
        es.cuped_moments_from_values(y[:1000], x[:1000]),
        es.cuped_moments_from_values(y[1000:], x[1000:]),
    )

    assert theta == pytest.approx(np.cov(y, x)[0, 1] / np.var(x, ddof=1), rel=1e-10)


def test_cuped_narrows_the_interval_by_about_rho_squared():
    rng = np.random.default_rng(7)
    rho = 0.7
    x = rng.normal(size=(2, 5000))
    y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=(2, 5000)) + 10.0
    y[1] += 0.05
    control, treatment = (es.cuped_moments_from_values(y[arm], x[arm]) for arm in (0, 1))

    result = es.cuped(control, treatment)
    adjusted = es.compare(result.control, result.treatment)
    raw = es.compare(result.control_raw, result.treatment_raw)

    assert result.variance_reduction == pytest.approx(rho**2, abs=0.03)
    assert adjusted.ci_high - adjusted.ci_low < 0.75 * (raw.ci_high - raw.ci_low)


# -- sequential testing -------------------------------------------------------------------------


def test_sequential_matches_growthbook_worked_examples():
    control = es.arm_from_sums(n=3000, total=1396.87, sum_squares=52377.9767)
    treatment = es.arm_from_sums(**GB_TREATMENT)
    control_rate = es.arm_from_conversions(n=3000, conversions=1396)
    treatment_rate = es.arm_from_conversions(n=3461, conversions=2422)

    means = es.compare(control, treatment, relative=True, is_sequential=True, tuning_n=1000)
    rates = es.compare(control_rate, treatment_rate, relative=True, is_sequential=True)

    assert rounded(means) == (0.50336, -0.55844, 1.56516, 0.33341, 1.0)
    assert rounded(rates) == (0.50386, 0.40098, 0.60675, 0.03386, 0.0)


def test_sequential_interval_is_tightest_when_tuned_near_the_sample_size():
    control = es.arm_from_sums(n=3000, total=1396.87, sum_squares=52377.9767)
    treatment = es.arm_from_sums(**GB_TREATMENT)

    widths = {
        tuning_n: es.compare(control, treatment, is_sequential=True, tuning_n=tuning_n)
        for tuning_n in (10, 6461, 10_000)
    }

    width = {key: value.ci_high - value.ci_low for key, value in widths.items()}
    assert width[6461] < width[10_000] < width[10]


# -- Bayesian view ------------------------------------------------------------------------------


def test_bayesian_matches_growthbook_with_flat_and_stated_priors():
    rates = es.relative_effect(
        es.arm_from_conversions(n=100, conversions=49),
        es.arm_from_conversions(n=100, conversions=51),
    )
    means = es.relative_effect(
        es.arm_from_sums(n=10, total=100, sum_squares=1002.25),
        es.arm_from_sums(n=10, total=105, sum_squares=1111.5),
    )

    flat = es.bayesian(rates)
    stated = es.bayesian(means, prior=es.GaussianPrior(mean=0.1, variance=0.1, proper=True))

    assert tuple(
        round(v, 5) for v in (flat.mean, flat.std, flat.ci_low, flat.ci_high, flat.chance_to_win)
    ) == (0.04082, 0.14725, -0.24779, 0.32943, 0.60918)
    assert (round(flat.risk_control, 5), round(flat.risk_treatment, 5)) == (0.0814, 0.04058)
    assert (round(stated.mean, 5), round(stated.std, 5), round(stated.chance_to_win, 5)) == (
        0.05063,
        0.03549,
        0.92315,
    )
    assert (round(stated.risk_control, 5), round(stated.risk_treatment, 5)) == (0.05186, 0.00123)


def test_degenerate_inputs_are_refused_or_flat():
    empty = es.arm_from_conversions(n=100, conversions=0)

    flat = es.compare(empty, empty)

    assert (flat.estimate, flat.ci_low, flat.ci_high, flat.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="non-zero control mean"):
        es.compare(empty, empty, relative=True)
    with pytest.raises(ValueError, match="non-zero standard error"):
        es.bayesian(es.absolute_effect(empty, empty))


# -- simulations --------------------------------------------------------------------------------


def simulated_rejection_rates(totals: np.ndarray, squares: np.ndarray) -> dict[str, float]:
    """Share of A/A experiments declared significant: one look, ten daily looks, sequential."""
    planned_n = 2 * UNITS_PER_ARM_PER_DAY * DAYS
    single = peeking = sequential_peeking = 0
    for experiment in range(EXPERIMENTS):
        looks = [look(totals, squares, experiment, day) for day in range(DAYS)]
        single += es.compare(*looks[-1]).is_significant()
        peeking += any(es.compare(*arms).is_significant() for arms in looks)
        sequential_peeking += any(
            es.compare(*arms, is_sequential=True, tuning_n=planned_n).is_significant()
            for arms in looks
        )
    return {
        "single": single / EXPERIMENTS,
        "peeking": peeking / EXPERIMENTS,
        "sequential_peeking": sequential_peeking / EXPERIMENTS,
    }


def test_aa_rejection_rates_with_and_without_peeking():
    totals, squares = daily_sums(np.random.default_rng(8))

    rates = simulated_rejection_rates(totals, squares)

    assert rates["single"] == pytest.approx(ALPHA, abs=REJECT_TOLERANCE)
    # The confidence sequence keeps the error at most alpha however often one looks.
    assert rates["sequential_peeking"] <= ALPHA + REJECT_TOLERANCE
    # Ten daily looks at the fixed-horizon test: the reason the sequential mode exists.
    assert rates["peeking"] > 2 * ALPHA


def test_injected_uplift_is_covered_about_95_percent_of_the_time():
    shift = 0.3
    totals, squares = daily_sums(np.random.default_rng(9), shift=shift)
    final = [look(totals, squares, experiment, DAYS - 1) for experiment in range(EXPERIMENTS)]

    absolute = [es.compare(*arms) for arms in final]
    relative = [es.compare(*arms, relative=True) for arms in final]
    sequential = [es.compare(*arms, is_sequential=True, tuning_n=2000) for arms in final]

    def coverage(results: list[es.Comparison], truth: float) -> float:
        return float(np.mean([r.ci_low <= truth <= r.ci_high for r in results]))

    assert coverage(absolute, shift) == pytest.approx(1 - ALPHA, abs=REJECT_TOLERANCE)
    assert coverage(relative, shift / 10.0) == pytest.approx(1 - ALPHA, abs=REJECT_TOLERANCE)
    assert coverage(sequential, shift) >= 1 - ALPHA - REJECT_TOLERANCE
