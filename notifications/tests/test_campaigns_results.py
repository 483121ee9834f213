"""A campaign's results: the endpoint (auth, shop scope, CSV) over decisions stored by the decision
run, the snippet's notification events and the experiment's stored result; and the incremental
revenue formula against an independent scipy/statsmodels computation on synthetic frames."""

import csv
import dataclasses
import io
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from rest_framework.test import APIClient
from scipy import stats

from events.services.ingest import events_ingest
from events.tests.factories import EventFactory
from notifications.campaigns import decisions, results, rules, services
from notifications.campaigns.rules import SessionFacts
from notifications.experiments.analysis import AnalysisConfig, ArmSpec, results_analyse
from notifications.experiments.results import experiments_refresh
from notifications.experiments.rules import UnitTraits
from notifications.models import Campaign, CampaignDecision, ExperimentResult
from notifications.tests.test_campaigns import (
    CONTENT,
    NOW,
    T0,
    anonymous_ids_in,
    campaign_running,
    live_session,
)
from notifications.tests.test_experiments_results_analysis import END, START, frame_of

ARMS_PER_SIDE = 6
# Who buys after the exposure, and for how much: 3 of 6 in the notified arm, 1 of 6 held out.
SPEND = {"nudge": ["30.00", "20.00", "10.00"], "holdout": ["10.00"]}
LATER = NOW + timedelta(hours=2)


def event(event_id, kind, anonymous_id, at, **fields):
    return {
        "event_id": event_id,
        "type": kind,
        "anonymous_id": anonymous_id,
        "timestamp": at.isoformat(),
        **fields,
    }


def onsite(kind, decision, anonymous_id, n, *, campaign="nudge", variant="nudge"):
    return event(
        f"{kind}-{anonymous_id}-{n}",
        kind,
        anonymous_id,
        NOW + timedelta(minutes=1 + n),
        properties={"campaign": campaign, "decision": decision, "variant": variant},
    )


def campaign_measured(shop, process_all, **overrides):
    """A running campaign with 6 decisions per arm, the toast's events of the notified arm, the
    exposures and purchases through ingestion and the pipeline, and the experiment's result."""
    campaign = campaign_running(shop, holdout_share=0.5, **overrides)
    ids = {arm: anonymous_ids_in(campaign, arm, ARMS_PER_SIDE) for arm in ("nudge", "holdout")}
    for anonymous_id in ids["nudge"] + ids["holdout"]:
        live_session(shop, anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    decided = dict(
        CampaignDecision.objects.filter(campaign=campaign).values_list("anonymous_id", "pk")
    )
    batch = []
    for arm, anonymous_ids in ids.items():
        for i, anonymous_id in enumerate(anonymous_ids):
            batch.append(
                event(
                    f"x-{anonymous_id}",
                    "experiment_exposure",
                    anonymous_id,
                    NOW,
                    properties={"experiment": "campaign-nudge", "variant": arm, "phase": 1},
                )
            )
            if i < len(SPEND[arm]):
                batch.append(
                    event(
                        f"p-{anonymous_id}",
                        "purchase",
                        anonymous_id,
                        NOW + timedelta(minutes=20),
                        order={"id": f"o-{anonymous_id}", "revenue": SPEND[arm][i]},
                    )
                )
    nudge = ids["nudge"]
    # Shown to 5 of 6 (the first in two tabs: one decision shown), 2 clicks, 1 dismissal.
    batch += [onsite("notification_shown", decided[a], a, 0) for a in nudge[:5]]
    batch.append(onsite("notification_shown", decided[nudge[0]], nudge[0], 1))
    batch += [onsite("notification_clicked", decided[a], a, 2) for a in nudge[:2]]
    batch.append(onsite("notification_dismissed", decided[nudge[4]], nudge[4], 3))
    # Ignored: an unknown decision, a decision of this campaign named under another campaign, a
    # decision id that is not a number.
    batch.append(onsite("notification_clicked", 10**9, nudge[5], 4))
    batch.append(onsite("notification_clicked", decided[nudge[5]], nudge[5], 5, campaign="other"))
    batch.append(onsite("notification_shown", "abc", nudge[5], 6))
    events_ingest(shop=shop, events=batch, received_at=LATER, sent_at=LATER)
    process_all(shop)
    experiments_refresh(shop_id=shop.pk, now=LATER)
    return campaign, ExperimentResult.objects.get(experiment=campaign.experiment)


@pytest.fixture
def measured(shop, process_all):
    return campaign_measured(shop, process_all)


@pytest.mark.django_db(transaction=True)
def test_results_count_decisions_toasts_and_orders_per_arm(api_client, shop, measured):
    campaign, stored = measured
    document = stored.data
    nudge_doc = next(a for a in document["arms"] if a["variant"] == "nudge")
    difference = nudge_doc["metrics"]["revenue_per_unit"]["absolute"]

    response = api_client.get(f"/notifications/campaigns/{campaign.pk}/results/?shop={shop.domain}")

    body = response.json()
    assert response.status_code == 200
    assert body["decisions"] == {
        "total": 12,
        "by_arm": {"holdout": 6, "nudge": 6},
        "by_reason": [
            {"arm": "holdout", "reason_kind": "score_band", "decisions": 6},
            {"arm": "nudge", "reason_kind": "score_band", "decisions": 6},
        ],
    }
    rows = {arm["arm"]: arm for arm in body["arms"]}
    assert [arm["arm"] for arm in body["arms"]] == ["holdout", "nudge"]
    compact = {
        key: (
            row["decisions"],
            row["shown"],
            row["clicked"],
            row["dismissed"],
            row["click_through_rate"],
            row["units"],
            row["conversions"],
        )
        for key, row in rows.items()
    }
    assert compact == {"holdout": (6, 0, 0, 0, None, 6, 1), "nudge": (6, 5, 2, 1, 0.4, 6, 3)}
    assert rows["nudge"]["conversion_rate"] == 0.5
    assert rows["nudge"]["conversion"]["absolute"] == pytest.approx(
        nudge_doc["metrics"]["conversion"]["absolute"]
    )
    assert rows["nudge"]["net_revenue"] == pytest.approx(
        nudge_doc["metrics"]["revenue_per_unit"]["mean"] * 6
    )
    assert rows["holdout"]["incremental_revenue"] is None
    expected = {
        "estimate": difference["estimate"] * 6,
        "ci_low": difference["ci_low"] * 6,
        "ci_high": difference["ci_high"] * 6,
    }
    assert rows["nudge"]["incremental_revenue"] == pytest.approx(expected)
    assert body["incremental_revenue"] == pytest.approx(
        expected | {"treatment_units": 6, "is_exact": True}
    )
    assert body["deliveries"] == [{"channel": "on_site", "delivered": {"nudge": 5}, "total": 5}]
    assert body["verdict"] == document["verdict"]
    assert body["campaign"]["trigger_summary"] == "score in [0.20, 0.60]"


@pytest.mark.django_db(transaction=True)
def test_results_as_csv_is_the_arms_table(api_client, shop, measured):
    campaign, _ = measured

    response = api_client.get(
        f"/notifications/campaigns/{campaign.pk}/results/?shop={shop.domain}&format=csv"
    )

    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="campaign_results.csv"' in response["Content-Disposition"]
    assert [
        (r["arm"], r["decisions"], r["shown"], r["clicked"], r["conversions"]) for r in rows
    ] == [("holdout", "6", "0", "0", "1"), ("nudge", "6", "5", "2", "3")]
    assert rows[0]["incremental_revenue"] == ""
    assert float(rows[1]["incremental_revenue"]) != 0.0


@pytest.mark.django_db
def test_a_draft_campaign_has_no_decisions_and_no_experiment_results(api_client, shop):
    campaign = services.campaign_create(
        shop=shop,
        key="draft",
        name="Draft",
        trigger={"kind": "first_visit"},
        variants=[CONTENT],
        now=T0,
    )

    response = api_client.get(f"/notifications/campaigns/{campaign.pk}/results/?shop={shop.domain}")

    body = response.json()
    assert response.status_code == 200
    assert [(a["arm"], a["decisions"], a["units"]) for a in body["arms"]] == [
        ("holdout", 0, None),
        ("nudge", 0, None),
    ]
    assert (body["verdict"], body["incremental_revenue"], body["results_computed_at"]) == (
        None,
        None,
        None,
    )
    assert not ExperimentResult.objects.exists()


@pytest.mark.django_db
def test_results_need_a_member_of_the_campaigns_shop(api_client, shop, other_shop):
    theirs = campaign_running(other_shop)
    mine = campaign_running(shop)
    path = "/notifications/campaigns/{}/results/?shop={}"

    anonymous = APIClient().get(path.format(mine.pk, shop.domain))
    other = api_client.get(path.format(theirs.pk, shop.domain))
    other_shop_named = api_client.get(path.format(theirs.pk, other_shop.domain))
    unknown = api_client.get(path.format(mine.pk + theirs.pk + 1000, shop.domain))
    unknown_csv = api_client.get(
        path.format(mine.pk + theirs.pk + 1000, shop.domain) + "&format=csv"
    )

    assert anonymous.status_code in (401, 403)
    assert (other.status_code, other.json()["code"]) == (404, "not_found")
    assert other_shop_named.status_code == 404
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")
    assert unknown_csv.status_code == 404
    assert not ExperimentResult.objects.filter(experiment=theirs.experiment).exists()


def test_every_reason_the_trigger_writes_has_its_kind():
    facts = SessionFacts(
        traits=UnitTraits(segment_ids=frozenset({7}), score=0.3),
        country="DE",
        is_converted=False,
        cart_value=0,
        last_cart_at=T0,
        last_checkout_at=None,
        max_product_views=4,
        urls=(),
        is_first_visit=True,
    )
    triggers = [
        {"kind": "score_band", "low": 0.2, "high": 0.6},
        {"kind": "cart_abandoned", "minutes": 5},
        {"kind": "product_viewed", "count": 3},
        {"kind": "segment_entered", "segment": 7},
        {"kind": "first_visit"},
    ]
    checkout = dataclasses.replace(facts, last_checkout_at=T0)

    reasons = [rules.trigger_fires(t, facts, now=NOW) for t in triggers]
    reasons.append(rules.trigger_fires({"kind": "checkout_started"}, checkout, now=NOW))

    kinds = [
        next(kind for prefix, kind in rules.REASON_PREFIXES if reason.startswith(prefix))
        for reason in reasons
    ]
    assert kinds == [*(t["kind"] for t in triggers), "checkout_started"]


# --- the incremental revenue formula ----------------------------------------------------------

CAMPAIGN_ARMS = (ArmSpec("holdout", "", 0.5, True), ArmSpec("nudge", "", 0.5, False))


def revenue_frame(n_per_arm: int, *, lift: float, seed: int) -> pd.DataFrame:
    """Skewed revenue (most units buy nothing), a correlated pre-period and a lift in nudge."""
    rng = np.random.default_rng(seed)
    variants = np.repeat(["holdout", "nudge"], n_per_arm)
    pre = rng.gamma(0.3, 60.0, 2 * n_per_arm) * (rng.random(2 * n_per_arm) < 0.4)
    buys = rng.random(2 * n_per_arm) < np.where(variants == "nudge", 0.12 * (1 + lift), 0.12)
    revenue = buys * rng.gamma(2.0, 30.0, 2 * n_per_arm) + 0.3 * pre
    return frame_of(
        variants,
        revenue=revenue,
        pre_revenue=pre,
        orders=buys.astype(float),
        pre_orders=(pre > 0).astype(float),
        seed=seed,
    )


def analysed(frame: pd.DataFrame, **overrides) -> dict:
    config = AnalysisConfig(
        **{
            "arms": CAMPAIGN_ARMS,
            "primary": {"kind": "conversion"},
            "secondary": ({"kind": "revenue_per_unit"},),
            "winsor_percentile": 99.0,
            "is_sequential": False,
        }
        | overrides
    )
    exposed = [int((frame["variant"] == arm.key).sum()) for arm in config.arms]
    return results_analyse(frame=frame, exposed=exposed, config=config, start=START, end=END)


def test_incremental_revenue_matches_an_independent_cuped_welch_computation():
    frame = revenue_frame(3000, lift=0.3, seed=11)
    nudge = (frame["variant"] == "nudge").to_numpy()
    # Independently: winsorise at the pooled 99th percentile (post and pre each), regress the
    # capped revenue on the capped pre-period revenue over every unit (statsmodels OLS), then a
    # Welch interval (scipy) on the adjusted values, scaled by the treated units.
    y = frame["revenue"].to_numpy()
    x = frame["pre_revenue"].to_numpy()
    y = np.minimum(y, np.percentile(y, 99.0))
    x = np.minimum(x, np.percentile(x, 99.0))
    theta = sm.OLS(y, sm.add_constant(x)).fit().params[1]
    adjusted = y - theta * x
    welch = stats.ttest_ind(adjusted[nudge], adjusted[~nudge], equal_var=False)
    interval = welch.confidence_interval(0.95)
    difference = adjusted[nudge].mean() - adjusted[~nudge].mean()
    treated = int(nudge.sum())

    found = results.incremental_revenue(analysed(frame)["arms"])

    assert found is not None
    assert found.treatment_units == treated == 3000
    assert found.is_exact
    assert found.estimate == pytest.approx(difference * treated, rel=1e-9)
    assert found.ci_low == pytest.approx(interval.low * treated, rel=1e-9)
    assert found.ci_high == pytest.approx(interval.high * treated, rel=1e-9)
    assert found.ci_low > 0


def test_incremental_revenue_without_a_covariate_is_the_plain_difference_of_means():
    frame = revenue_frame(2000, lift=0.0, seed=5)
    frame["pre_revenue"] = 0.0
    nudge = (frame["variant"] == "nudge").to_numpy()
    y = frame["revenue"].to_numpy()
    y = np.minimum(y, np.percentile(y, 99.0))
    interval = stats.ttest_ind(y[nudge], y[~nudge], equal_var=False).confidence_interval(0.95)
    raw = y[nudge].sum() - y[~nudge].mean() * nudge.sum()

    found = results.incremental_revenue(analysed(frame)["arms"])

    assert found is not None
    # (treatment revenue per unit − holdout revenue per unit) × treatment units
    assert found.estimate == pytest.approx(raw, rel=1e-9)
    assert (found.ci_low, found.ci_high) == pytest.approx(
        (interval.low * 2000, interval.high * 2000), rel=1e-9
    )
    assert found.ci_low < 0 < found.ci_high


def test_incremental_revenue_with_the_sequential_interval_scales_the_confidence_sequence():
    frame = revenue_frame(1500, lift=0.2, seed=3)
    frame["pre_revenue"] = 0.0
    nudge = (frame["variant"] == "nudge").to_numpy()
    y = frame["revenue"].to_numpy()
    y = np.minimum(y, np.percentile(y, 99.0))
    # The normal-mixture confidence sequence, written out from docs/experiments.md in numpy.
    variance = y[nudge].var(ddof=1) / nudge.sum() + y[~nudge].var(ddof=1) / (~nudge).sum()
    n = len(y)
    alpha, tuning = 0.05, 5000
    rho = np.sqrt((-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / tuning)
    s2 = variance * n
    half = np.sqrt(s2) * np.sqrt(
        2 * (n * rho**2 + 1) / (n**2 * rho**2) * np.log(np.sqrt(n * rho**2 + 1) / alpha)
    )
    difference = y[nudge].mean() - y[~nudge].mean()

    found = results.incremental_revenue(analysed(frame, is_sequential=True)["arms"])

    assert found is not None
    assert (found.estimate, found.ci_low, found.ci_high) == pytest.approx(
        (difference * 1500, (difference - half) * 1500, (difference + half) * 1500), rel=1e-9
    )


def test_several_content_arms_sum_their_incremental_revenue_conservatively():
    rng = np.random.default_rng(8)
    variants = rng.choice(["holdout", "a", "b"], size=6000)
    revenue = (rng.random(6000) < 0.1) * rng.gamma(2.0, 30.0, 6000)
    frame = frame_of(variants, revenue=revenue, orders=(revenue > 0).astype(float), seed=8)
    arms = (
        ArmSpec("holdout", "", 1 / 3, True),
        ArmSpec("a", "", 1 / 3, False),
        ArmSpec("b", "", 1 / 3, False),
    )
    y = np.minimum(revenue, np.percentile(revenue, 99.0))
    held = y[variants == "holdout"]
    parts = []
    for key in ("a", "b"):
        mine = y[variants == key]
        ci = stats.ttest_ind(mine, held, equal_var=False).confidence_interval(0.95)
        parts.append((mine.mean() - held.mean(), ci.low, ci.high, len(mine)))
    # The exact interval of the sum, with the shared holdout's covariance (normal approximation).
    n_a, n_b = parts[0][3], parts[1][3]
    exact_sd = np.sqrt(
        n_a**2 * y[variants == "a"].var(ddof=1) / n_a
        + n_b**2 * y[variants == "b"].var(ddof=1) / n_b
        + (n_a + n_b) ** 2 * held.var(ddof=1) / len(held)
    )

    found = results.incremental_revenue(analysed(frame, arms=arms)["arms"])

    assert found is not None
    assert not found.is_exact
    assert found.treatment_units == n_a + n_b
    assert found.estimate == pytest.approx(sum(d * n for d, _, _, n in parts), rel=1e-9)
    assert (found.ci_low, found.ci_high) == pytest.approx(
        (sum(lo * n for _, lo, _, n in parts), sum(hi * n for _, _, hi, n in parts)), rel=1e-9
    )
    assert (found.ci_high - found.ci_low) / 2 >= stats.norm.ppf(0.975) * exact_sd


def test_no_incremental_revenue_without_a_revenue_comparison():
    frame = revenue_frame(1, lift=0.0, seed=1)

    found = results.incremental_revenue(analysed(frame)["arms"])

    assert found is None


@pytest.mark.django_db
def test_the_dashboard_headlines_take_a_fixed_number_of_queries(shop, django_assert_num_queries):
    first = campaign_running(shop)
    for key in ("second", "third"):
        campaign_running(shop, key=key)
    live_session(shop, anonymous_id=anonymous_ids_in(first, "nudge", 1)[0])
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    decision = CampaignDecision.objects.get()
    EventFactory(
        shop=shop,
        type="notification_shown",
        occurred_at=NOW,
        properties={"campaign": "nudge", "decision": decision.pk, "variant": "nudge"},
    )
    campaigns = list(Campaign.objects.filter(shop=shop).select_related("experiment").order_by("pk"))

    with django_assert_num_queries(4):
        headlines = results.campaigns_headlines(shop=shop, campaigns=campaigns)

    assert [(headlines[c.pk]["decisions"], headlines[c.pk]["shown"]) for c in campaigns] == [
        (1, 1),
        (0, 0),
        (0, 0),
    ]
    assert [headlines[c.pk]["trigger_summary"] for c in campaigns] == ["score in [0.20, 0.60]"] * 3


@pytest.mark.django_db(transaction=True)
def test_the_admin_shows_the_results_per_arm_and_links_the_dashboard(admin_client, shop, measured):
    campaign, stored = measured
    campaign.name = "<img src=x onerror=alert(1)>"
    campaign.save(update_fields=["name"])
    nudge = next(a for a in stored.data["arms"] if a["variant"] == "nudge")
    difference = nudge["metrics"]["revenue_per_unit"]["absolute"]

    page = admin_client.get(f"/admin/notifications/campaign/{campaign.pk}/change/").content.decode()

    assert "<td>nudge</td><td>6</td><td>5</td><td>2</td><td>6</td><td>3</td>" in page
    assert f"<td>{difference['estimate'] * 6:,.2f} (" in page
    assert "<td>holdout</td><td>6</td><td>0</td><td>0</td><td>6</td><td>1</td><td>–</td>" in page
    assert f"/campaigns-dashboard/?shop={shop.domain}&amp;campaign={campaign.pk}" in page
    assert "<img src=x" not in page
