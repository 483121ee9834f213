"""BG/NBD and Gamma-Gamma against published fits, numeric integration and simulation (no DB).

Published figures: Fader, Hardie & Lee (2005), "Counting your customers the easy way", CDNOW
sample, 39-week calibration: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4, and
E[Y(39) | x = 2, t_x = 30.43, T = 38.86] = 1.226. Fader & Hardie (2013), "The Gamma-Gamma model
of monetary value": p = 6.25, q = 3.74, v = 15.44 on the 946 repeat customers' mean repeat spend
in the same calibration period (LL -4055.9 as CLVTools' correctness test states it).
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats
from scipy.special import hyp2f1

from conftest import SHARED_DATA
from segments.predictions import btyd
from segments.predictions.btyd import (
    BgNbdParams,
    FitError,
    GammaGammaParams,
    bgnbd_expected_purchases,
    bgnbd_expected_purchases_new,
    bgnbd_fit,
    bgnbd_log_likelihood,
    bgnbd_probability_alive,
    bgnbd_purchase_probability,
    clv_expected,
    gamma_gamma_expected_value,
    gamma_gamma_fit,
    gamma_gamma_log_likelihood,
)
from segments.predictions.summary import orders_summarize

CDNOW = SHARED_DATA / "customers" / "cdnow"
PUBLISHED = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426, log_likelihood=0, customer_count=0)
GG = GammaGammaParams(p=6.25, q=3.74, v=15.44, log_likelihood=0, customer_count=0)


@pytest.fixture(scope="module")
def cdnow_summary():
    path = CDNOW / "cdnow_customers_summary.csv"
    if not path.is_file():
        pytest.skip(f"CDNOW summary not found at {path}")
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def cdnow_calibration():
    path = CDNOW / "CDNOW_sample.txt"
    if not path.is_file():
        pytest.skip(f"CDNOW transactions not found at {path}")
    raw = pd.read_fwf(
        path, header=None, names=["id", "cohort", "date", "cds", "value"], dtype={"date": str}
    )
    orders = pd.DataFrame(
        {
            "customer_id": raw["id"],
            "ordered_at": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "value": raw["value"],
        }
    )
    return orders_summarize(orders, cutoff=pd.Timestamp("1997-10-01"), unit_days=7)


def test_bgnbd_fit_reproduces_fader_hardie_lee_2005(cdnow_summary):
    s = cdnow_summary

    fitted = bgnbd_fit(s["frequency"], s["recency"], s["T"])

    assert (round(fitted.r, 3), round(fitted.alpha, 3)) == (0.243, 4.414)
    assert (round(fitted.a, 3), round(fitted.b, 3)) == (0.793, 2.426)
    assert round(fitted.log_likelihood, 1) == -9582.4
    assert fitted.customer_count == 2357


def test_bgnbd_fit_with_weights_equals_fit_on_every_row(cdnow_summary):
    s = cdnow_summary
    grouped = s.groupby(["frequency", "recency", "T"], as_index=False).size()

    fitted = bgnbd_fit(
        grouped["frequency"], grouped["recency"], grouped["T"], weights=grouped["size"]
    )

    assert len(grouped) < len(s)
    assert round(fitted.log_likelihood, 1) == -9582.4
    assert (round(fitted.r, 3), round(fitted.a, 3)) == (0.243, 0.793)


def test_bgnbd_conditional_expectation_of_the_published_customer():
    expected = bgnbd_expected_purchases(PUBLISHED, 39, 2, 30.43, 38.86)

    assert round(float(expected), 3) == 1.226


def test_bgnbd_expectation_equals_the_direct_hypergeometric_form():
    # Our Euler-transformed evaluation against FHL eq. 10 as printed, where both are finite.
    p = PUBLISHED
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    for x, t_x, big_t, t in [(0, 0, 38.86, 52), (2, 30.43, 38.86, 39), (7, 20.0, 35.0, 10)]:
        z = t / (alpha + big_t + t)
        direct = (
            (a + b + x - 1)
            / (a - 1)
            * (
                1
                - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)
                * hyp2f1(r + x, b + x, a + b + x - 1, z)
            )
            / (1 + (x > 0) * a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x))
        )

        ours = bgnbd_expected_purchases(p, t, x, t_x, big_t)

        assert float(ours) == pytest.approx(direct, rel=1e-10)


def test_bgnbd_expectation_is_finite_when_a_and_b_are_huge():
    # A shop where nobody seems to drop out fits a, b -> infinity at a fixed ratio (a bench
    # shop gave a = 1.19e6, b = 8.14e6): the Euler form is 0 * inf there, the printed form is
    # not, and the values converge as a, b grow at the same ratio.
    def expected(scale):
        params = BgNbdParams(0.17, 27.9, 0.146 * scale, scale, 0.0, 0)
        return bgnbd_expected_purchases(params, 365, [0, 5, 11], [0, 200, 600], [100, 400, 700])

    def printed(scale, x, t_x, big_t, t=365):
        r, alpha, a, b = 0.17, 27.9, 0.146 * scale, scale
        z = t / (alpha + big_t + t)
        growth = (
            (a + b + x - 1)
            / (a - 1)
            * (
                1
                - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)
                * hyp2f1(r + x, b + x, a + b + x - 1, z)
            )
        )
        dropout = (x > 0) * a / (b + x - 1) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
        return growth / (1 + dropout)

    huge = expected(8.14e6)

    assert np.all(np.isfinite(huge))
    assert huge.tolist() == pytest.approx(
        [printed(8.14e6, 0, 0, 100), printed(8.14e6, 5, 200, 400), printed(8.14e6, 11, 600, 700)],
        rel=1e-9,
    )
    assert huge.tolist() == pytest.approx(expected(8.14e4).tolist(), rel=1e-3)


def test_bgnbd_log_likelihood_matches_numeric_integration():
    # L(x, t_x, T) = integral over lambda ~ Gamma(r, alpha), p ~ Beta(a, b) of
    # (1-p)^x lambda^x e^(-lambda T) + [x > 0] p (1-p)^(x-1) lambda^x e^(-lambda t_x).
    r, alpha, a, b = 0.9, 3.0, 1.4, 2.5
    log_beta_ab = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    for x, t_x, big_t in [(0, 0.0, 10.0), (1, 2.5, 10.0), (4, 8.0, 12.0)]:

        def integrand(lam, p, x=x, t_x=t_x, big_t=big_t):
            alive = (1 - p) ** x * lam**x * math.exp(-lam * big_t)
            dead = p * (1 - p) ** (x - 1) * lam**x * math.exp(-lam * t_x) if x > 0 else 0.0
            log_gamma = r * math.log(alpha) + (r - 1) * math.log(lam) - alpha * lam - math.lgamma(r)
            log_beta = (a - 1) * math.log(p) + (b - 1) * math.log1p(-p) - log_beta_ab
            return (alive + dead) * math.exp(log_gamma + log_beta)

        numeric, _ = integrate.dblquad(integrand, 0, 1, 0, np.inf, epsabs=1e-13)

        closed = np.exp(bgnbd_log_likelihood(r, alpha, a, b, [x], [t_x], [big_t]))[0]

        assert closed == pytest.approx(numeric, rel=1e-5)


def _bgnbd_simulate(params, n, big_t, horizon, seed):
    """Customers whose first purchase is at 0, under the BG/NBD story: repeat purchases in
    (0, T], the last one's time, purchases in (T, T + horizon], and alive at T. A customer
    can drop out only just after a repeat purchase (FHL 2005), never after the first."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    drop = rng.beta(params.a, params.b, n)
    now = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    calibration = np.zeros(n, dtype=int)
    last = np.zeros(n)
    holdout = np.zeros(n, dtype=int)
    alive_at_t = np.ones(n, dtype=bool)
    active = np.ones(n, dtype=bool)
    while active.any():
        now[active] += rng.exponential(1 / lam[active])
        in_cal = active & (now <= big_t)
        in_hold = active & (now > big_t) & (now <= big_t + horizon)
        calibration[in_cal] += 1
        last[in_cal] = now[in_cal]
        holdout[in_hold] += 1
        bought = in_cal | in_hold
        dies = bought & (rng.random(n) < drop)
        alive[dies] = False
        alive_at_t[dies & in_cal] = False
        active = alive & (now <= big_t + horizon)
    return calibration, last, holdout, alive_at_t


def test_bgnbd_conditional_predictions_match_simulation():
    # Law of total expectation: averaged over simulated customers, E[Y | x, t_x, T] must equal
    # the mean of what they then bought; likewise P(alive) and P(buy in the next t).
    params = BgNbdParams(r=0.8, alpha=4.0, a=0.9, b=3.0, log_likelihood=0, customer_count=0)
    x, t_x, holdout, alive = _bgnbd_simulate(params, n=60_000, big_t=20.0, horizon=10.0, seed=7)
    big_t = np.full(len(x), 20.0)

    expected = bgnbd_expected_purchases(params, 10.0, x, t_x, big_t)
    p_alive = bgnbd_probability_alive(params, x, t_x, big_t)
    p_buy = bgnbd_purchase_probability(params, 10.0, x, t_x, big_t)

    assert expected.mean() == pytest.approx(holdout.mean(), rel=0.03)
    assert p_alive.mean() == pytest.approx(alive.mean(), abs=0.01)
    assert p_buy.mean() == pytest.approx((holdout > 0).mean(), abs=0.01)
    assert bgnbd_expected_purchases_new(params, 20.0) == pytest.approx(x.mean(), rel=0.03)


def test_bgnbd_predictions_move_the_way_theory_says():
    p = PUBLISHED
    horizons = np.array([1, 5, 10, 39, 104])
    recencies = np.array([5.0, 15.0, 25.0, 38.86])
    lengths = np.array([30.0, 40.0, 60.0, 100.0])

    by_horizon = bgnbd_expected_purchases(p, horizons, 3, 20.0, 38.86)
    alive_by_recency = bgnbd_probability_alive(p, 3, recencies, 38.86)
    expected_by_recency = bgnbd_expected_purchases(p, 39, 3, recencies, 38.86)
    alive_by_silence = bgnbd_probability_alive(p, 3, 20.0, lengths)
    expected_by_frequency = bgnbd_expected_purchases(p, 39, np.arange(1, 8), 38.86, 38.86)

    assert np.all(np.diff(by_horizon) > 0)
    assert np.all(np.diff(alive_by_recency) > 0)
    assert alive_by_recency[-1] == pytest.approx(1 / (1 + p.a / (p.b + 2)))
    assert np.all(np.diff(expected_by_recency) > 0)
    assert np.all(np.diff(alive_by_silence) < 0)
    assert np.all(np.diff(expected_by_frequency) > 0)
    assert bgnbd_probability_alive(p, 0, 0.0, 38.86) == 1.0


def test_bgnbd_stays_finite_for_very_frequent_buyers():
    p = PUBLISHED

    ll = bgnbd_log_likelihood(p.r, p.alpha, p.a, p.b, [500], [364.0], [365.0])
    expected = bgnbd_expected_purchases(p, 365, 500, 364.0, 365.0)
    alive = bgnbd_probability_alive(p, 500, 100.0, 365.0)

    assert np.isfinite(ll[0])
    assert 300 < float(expected) < 700
    assert 0.0 <= float(alive) < 1e-6


def test_bgnbd_fit_rejects_impossible_summaries():
    with pytest.raises(FitError, match="recency <= T"):
        bgnbd_fit([1], [5.0], [3.0])
    with pytest.raises(FitError, match="no customers"):
        bgnbd_fit([], [], [])


def test_gamma_gamma_fit_reproduces_fader_hardie_2013(cdnow_calibration):
    repeat = cdnow_calibration[cdnow_calibration["frequency"] > 0]

    fitted = gamma_gamma_fit(repeat["frequency"], repeat["monetary"])

    assert (round(fitted.p, 2), round(fitted.q, 2), round(fitted.v, 2)) == (6.25, 3.74, 15.44)
    assert round(fitted.log_likelihood, 1) == -4055.9
    assert fitted.customer_count == 946


def test_gamma_gamma_density_matches_numeric_integration():
    # m_x | nu ~ Gamma(p x, scale 1 / (nu x)) (mean of x Gamma(p, nu) draws), nu ~ Gamma(q, 1/v).
    p, q, v = 6.25, 3.74, 15.44
    for x, m in [(1, 20.0), (3, 35.5), (10, 12.0)]:

        def integrand(nu, x=x, m=m):
            return stats.gamma.pdf(m, p * x, scale=1 / (nu * x)) * stats.gamma.pdf(
                nu, q, scale=1 / v
            )

        numeric, _ = integrate.quad(integrand, 0, np.inf, epsabs=1e-14)

        assert np.exp(gamma_gamma_log_likelihood(p, q, v, [x], [m]))[0] == pytest.approx(
            numeric, rel=1e-6
        )


def test_gamma_gamma_expected_value_is_the_posterior_mean():
    x, m = 4, 30.0
    # E[value | data] = p E[1 / nu | data]; nu | data ~ Gamma(p x + q, rate v + x m).
    posterior = stats.gamma(GG.p * x + GG.q, scale=1 / (GG.v + x * m))
    numeric = GG.p * posterior.expect(lambda nu: 1 / nu)

    expected = gamma_gamma_expected_value(GG, x, m)

    assert float(expected) == pytest.approx(numeric, rel=1e-8)
    assert float(gamma_gamma_expected_value(GG, 0, 0.0)) == pytest.approx(GG.population_mean)
    assert float(gamma_gamma_expected_value(GG, 10_000, 30.0)) == pytest.approx(30.0, rel=1e-3)


def test_clv_is_purchases_times_value_and_discounting_lowers_it():
    x, t_x, big_t, m = (
        np.array([2, 0]),
        np.array([30.43, 0.0]),
        np.array([38.86, 38.86]),
        np.array([40.0, 0.0]),
    )
    purchases = bgnbd_expected_purchases(PUBLISHED, 52, x, t_x, big_t)
    value = gamma_gamma_expected_value(GG, x, m)
    rate = 0.01
    steps = bgnbd_expected_purchases(PUBLISHED, np.array([[13], [26], [39], [52]]), x, t_x, big_t)
    increments = np.diff(np.vstack([np.zeros(2), steps]), axis=0)
    discounted = (increments / (1 + rate) ** np.array([[13], [26], [39], [52]])).sum(axis=0)

    plain = clv_expected(PUBLISHED, GG, x, t_x, big_t, m, horizon=52)
    quarterly = clv_expected(
        PUBLISHED, GG, x, t_x, big_t, m, horizon=52, step=13, discount_rate=rate
    )

    np.testing.assert_allclose(plain, purchases * value, rtol=1e-12)
    np.testing.assert_allclose(quarterly, discounted * value, rtol=1e-12)
    assert np.all(quarterly < plain)


def test_fit_stops_at_the_ceiling_on_a_ridge_without_end():
    """A likelihood that rises forever along a ridge (log a - log b fixed, both growing) stops
    where a parameter passes the ceiling instead of running every iteration."""
    calls = []

    def objective(log_params):
        calls.append(1)
        return -(log_params[0] + log_params[1]) + (log_params[0] - log_params[1] - 1.0) ** 2

    found = btyd._fit(objective, np.zeros(2), names="ridge", ceiling=1e6)
    assert max(found) > 1e6
    assert len(calls) < 1000
    # Without the ceiling Nelder-Mead walks the ridge through every one of its 4000 iterations.
    calls.clear()
    with pytest.raises(btyd.FitError):
        btyd._fit(objective, np.zeros(2), names="ridge")
    assert len(calls) > 4000
