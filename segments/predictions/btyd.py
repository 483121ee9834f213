"""Buy-till-you-die models: BG/NBD for the number of purchases, Gamma-Gamma for their value.

Inputs are the per-customer summary of `summary.py`: `frequency` x (repeat purchases), `recency`
t_x (first to last purchase), `T` (first purchase to the end of observation), all in one time
unit (days or weeks; the fitted alpha carries that unit), and `monetary` (mean repeat value).

- BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a
  customer buys as a Poisson process of rate lambda ~ Gamma(r, alpha); after each purchase she
  drops out with probability p ~ Beta(a, b).
- Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie 2013 note): the value
  of each purchase is Gamma(p, nu), nu ~ Gamma(q, v) across customers, independent of the
  purchase process.

We implement the likelihoods ourselves (numpy/scipy) because `lifetimes` is unmaintained since
2020 and pymc-marketing brings PyMC; tests reproduce the published CDNOW estimates.
"""

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1, logsumexp

FloatArray = NDArray[np.float64]


class FitError(ValueError):
    """The optimiser did not converge or the data cannot identify the model."""


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    customer_count: int


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    p: float
    q: float
    v: float
    log_likelihood: float
    customer_count: int

    @property
    def population_mean(self) -> float:
        """E[value of a purchase] for a customer we know nothing about (needs q > 1)."""
        return self.p * self.v / (self.q - 1) if self.q > 1 else float("inf")


def _arrays(*values: ArrayLike) -> list[FloatArray]:
    """Float arrays broadcast to one shape: any argument may be a scalar or a per-customer array."""
    return list(np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in values)))


def bgnbd_log_likelihood(
    r: float, alpha: float, a: float, b: float, frequency, recency, T
) -> FloatArray:
    """Per-customer log-likelihood (FHL 2005, eq. 6), computed in logs.

    L = B(a, b+x)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x))
    The two terms are added with logsumexp: for frequent buyers each term alone underflows.
    """
    x, t_x, big_t = _arrays(frequency, recency, T)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    still_alive = betaln(a, b + x) - (r + x) * np.log(alpha + big_t)
    # For x == 0 the second term does not exist; b + x - 1 may be <= 0 there, so guard it.
    repeat = x > 0
    dropped = np.full_like(x, -np.inf)
    dropped[repeat] = betaln(a + 1, b + x[repeat] - 1) - (r + x[repeat]) * np.log(
        alpha + t_x[repeat]
    )
    return common + logsumexp(np.stack([still_alive, dropped]), axis=0)


def _fit(objective, start: FloatArray, *, names: str, ceiling: float | None = None) -> FloatArray:
    # Log-parametrisation keeps every parameter positive without bounds; Nelder-Mead first is
    # robust from a poor start, then BFGS polishes to the optimum the published fits report.
    # `ceiling`: the search stops when a parameter passes it (a likelihood rising without end
    # along a ridge, see gamma_gamma_fit); that point is returned as it is.
    log_ceiling = np.inf if ceiling is None else np.log(ceiling)
    diverged = []

    def watch(xk: FloatArray) -> None:
        if np.max(xk) > log_ceiling:
            diverged.append(np.array(xk))
            raise StopIteration

    rough = minimize(
        objective, start, method="Nelder-Mead", options={"maxiter": 4000}, callback=watch
    )
    if diverged:
        point = diverged[-1]
        if not np.isfinite(objective(point)):
            raise FitError(f"{names}: the likelihood could not be maximised")
        return np.exp(point)
    fine = minimize(objective, rough.x, method="BFGS")
    best = fine if fine.fun <= rough.fun and np.isfinite(fine.fun) else rough
    if not np.all(np.isfinite(best.x)) or not np.isfinite(best.fun):
        raise FitError(f"{names}: the likelihood could not be maximised")
    return np.exp(best.x)


def bgnbd_fit(frequency, recency, T, *, weights=None) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters; `weights` counts identical customers.

    Grouping identical (x, t_x, T) rows and passing their counts as weights gives the same fit
    faster: day-granular summaries of a large shop repeat a lot.
    """
    x, t_x, big_t = _arrays(frequency, recency, T)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    if len(x) == 0 or w.sum() <= 0:
        raise FitError("bgnbd: no customers")
    if np.any(x < 0) or np.any(t_x > big_t) or np.any((x > 0) & (t_x <= 0)):
        raise FitError("bgnbd: need frequency >= 0 and 0 < recency <= T for repeat customers")
    total = w.sum()

    def objective(log_params: FloatArray) -> float:
        r, alpha, a, b = np.exp(log_params)
        ll = bgnbd_log_likelihood(r, alpha, a, b, x, t_x, big_t)
        value = -float(np.dot(w, ll)) / total
        return value if np.isfinite(value) else 1e300

    # The mean purchase rate of repeaters sets the scale of alpha: start near it.
    start = np.log([1.0, max(float(np.average(big_t, weights=w)), 1e-3), 1.0, 1.0])
    r, alpha, a, b = _fit(objective, start, names="bgnbd")
    ll = float(np.dot(w, bgnbd_log_likelihood(r, alpha, a, b, x, t_x, big_t)))
    return BgNbdParams(float(r), float(alpha), float(a), float(b), ll, int(total))


def _log_dropout_odds(params: BgNbdParams, x: FloatArray, t_x: FloatArray, big_t: FloatArray):
    """log of a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x): the odds of 'dropped out' over 'alive'."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    odds = np.full_like(x, -np.inf)
    repeat = x > 0
    xr = x[repeat]
    odds[repeat] = (
        np.log(a)
        - np.log(b + xr - 1)
        + (r + xr) * (np.log(alpha + big_t[repeat]) - np.log(alpha + t_x[repeat]))
    )
    return odds


def bgnbd_probability_alive(params: BgNbdParams, frequency, recency, T) -> FloatArray:
    """P(still alive at T | x, t_x, T) (FHL 2005 eq. 11); 1 for customers without repeats.

    BG/NBD customers can only drop out just after a purchase, so a one-off buyer is certainly
    alive: use Pareto/NBD or the GBM if that assumption matters for a shop.
    """
    x, t_x, big_t = _arrays(frequency, recency, T)
    return expit(-_log_dropout_odds(params, x, t_x, big_t))


def _pfaff_term(params: BgNbdParams, x: FloatArray, big_t: FloatArray, t: FloatArray):
    """((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; z), z = t/(alpha+T+t).

    Evaluated after Euler's transformation 2F1(A,B;C;z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z),
    which turns it into (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z): the large exponent r+x and
    the large parameter b+x (frequent buyers) leave the series, which then stays near 1.
    With a and b both large (a shop where almost nobody drops out fits a, b -> infinity at a
    fixed ratio) the transformed form is 0 * inf; the printed form is finite there (its series
    behaves like (1 - z b/(a+b))^-(r+x)), so it takes over where the first is not finite.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    one_minus_z = (alpha + big_t) / (alpha + big_t + t)
    z = t / (alpha + big_t + t)
    with np.errstate(invalid="ignore", over="ignore"):
        euler = one_minus_z ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
    bad = ~np.isfinite(euler)
    if np.any(bad):
        euler = np.where(
            bad, one_minus_z ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z), euler
        )
    return euler


def bgnbd_expected_purchases(params: BgNbdParams, t, frequency, recency, T) -> FloatArray:
    """E[purchases in (T, T+t] | x, t_x, T] (FHL 2005 eq. 10); t in the fit's time unit."""
    x, t_x, big_t, horizon = _arrays(frequency, recency, T, t)
    a, b = params.a, params.b
    if abs(a - 1) < 1e-9:
        raise FitError("bgnbd: a == 1 makes the closed form 0/0; refit or perturb a")
    alive = expit(-_log_dropout_odds(params, x, t_x, big_t))
    growth = (a + b + x - 1) / (a - 1) * (1 - _pfaff_term(params, x, big_t, horizon))
    return alive * growth


def bgnbd_expected_purchases_new(params: BgNbdParams, t) -> FloatArray:
    """E[X(t)]: repeat purchases of a new customer in her first t periods (FHL 2005 eq. 9)."""
    horizon = np.asarray(t, dtype=float)
    zero = np.zeros_like(horizon)
    return bgnbd_expected_purchases(params, horizon, zero, zero, zero)


def bgnbd_purchase_probability(params: BgNbdParams, t, frequency, recency, T) -> FloatArray:
    """P(at least one purchase in (T, T+t] | x, t_x, T).

    Dropout happens only just after a purchase, so no purchase in (T, T+t] means dead at T, or
    alive with no Poisson arrival; given alive, lambda ~ Gamma(r+x, alpha+T), whence
    P = P(alive) * (1 - ((alpha+T)/(alpha+T+t))^(r+x)).
    """
    x, t_x, big_t, horizon = _arrays(frequency, recency, T, t)
    alive = bgnbd_probability_alive(params, x, t_x, big_t)
    none_if_alive = np.exp(
        (params.r + x) * (np.log(params.alpha + big_t) - np.log(params.alpha + big_t + horizon))
    )
    return alive * (1 - none_if_alive)


GAMMA_GAMMA_CEILING = 1e12


def gamma_gamma_log_likelihood(p: float, q: float, v: float, frequency, monetary) -> FloatArray:
    """Log density of the observed mean value m_x of x purchases (Fader & Hardie 2013, eq. 3).

    f(m_x | x) = G(px+q) / (G(px) G(q)) * v^q m_x^(px-1) x^(px) / (v + x m_x)^(px+q)
    """
    x, m = _arrays(frequency, monetary)
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(v + x * m)
    )


def gamma_gamma_fit(frequency, monetary, *, weights=None) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters on customers with x >= 1 and m_x > 0.

    Pass repeat purchases only (frequency = repeat count, monetary = their mean value), as
    the published fits do: the first purchase is often unlike the rest (a sign-up offer).
    """
    x, m = _arrays(frequency, monetary)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    keep = (x > 0) & (m > 0)
    x, m, w = x[keep], m[keep], w[keep]
    if w.sum() <= 0:
        raise FitError("gamma_gamma: no repeat customers with a positive mean value")
    total = w.sum()

    def objective(log_params: FloatArray) -> float:
        p, q, v = np.exp(log_params)
        value = -float(np.dot(w, gamma_gamma_log_likelihood(p, q, v, x, m))) / total
        return value if np.isfinite(value) else 1e300

    # Start at the method-of-moments-like guess p = 1, q = 2, v = mean: E[M] = p v / (q - 1).
    start = np.log([1.0, 2.0, float(np.average(m, weights=w))])
    # Customers whose mean values do not vary beyond what their purchase counts explain push q
    # and v to infinity together (p v / (q - 1), the population mean, stays finite). Past
    # GAMMA_GAMMA_CEILING the log-gamma differences of the likelihood lose their precision
    # (cancellation), so the search stops there instead of wandering for minutes: every
    # customer then gets the population mean, as the limit would give.
    p, q, v = _fit(objective, start, names="gamma_gamma", ceiling=GAMMA_GAMMA_CEILING)
    ll = float(np.dot(w, gamma_gamma_log_likelihood(p, q, v, x, m)))
    return GammaGammaParams(float(p), float(q), float(v), ll, int(total))


def gamma_gamma_expected_value(params: GammaGammaParams, frequency, monetary) -> FloatArray:
    """E[value of a future purchase | x, m_x] (Fader & Hardie 2013, eq. 5).

    A weighted average of the population mean p v / (q - 1) and the customer's own mean m_x,
    the weight on m_x growing with x: customers without repeats get the population mean.
    """
    x, m = _arrays(frequency, monetary)
    p, q, v = params.p, params.q, params.v
    if q <= 1:
        raise FitError("gamma_gamma: q <= 1 means the mean value is infinite")
    m = np.where(x > 0, m, 0.0)
    return p * (v + x * m) / (p * x + q - 1)


def clv_expected(
    purchases: BgNbdParams,
    spend: GammaGammaParams,
    frequency,
    recency,
    T,
    monetary,
    *,
    horizon: float,
    step: float | None = None,
    discount_rate: float = 0.0,
) -> FloatArray:
    """Expected revenue in (T, T+horizon]: E[purchases] x E[value], optionally discounted.

    `discount_rate` is per time unit of the fit (e.g. 0.01 a week); the horizon is cut into
    steps (default: the whole horizon) and each step's expected purchases are discounted by
    (1 + rate)^-(end of the step), as the usual discrete CLV sum does.
    """
    x, t_x, big_t = _arrays(frequency, recency, T)
    value = gamma_gamma_expected_value(spend, x, monetary)
    step = horizon if step is None else step
    ends = np.append(np.arange(step, horizon, step), horizon)
    total = np.zeros_like(x)
    before = np.zeros_like(x)
    for end in ends:
        cumulative = bgnbd_expected_purchases(purchases, end, x, t_x, big_t)
        total += (cumulative - before) / (1 + discount_rate) ** end
        before = cumulative
    return total * value
