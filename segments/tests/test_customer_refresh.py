"""The nightly customer refresh against an independent pandas computation, its small-shop
state, its reruns, erasure and the predicted segments."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from events.models import IdentifierKind, Order, Person, PersonIdentifier
from events.services.erasure import persons_erase
from events.tests.factories import ShopFactory
from segments.models import CustomerModel, CustomerPrediction, Segment, SegmentMembership
from segments.predictions import btyd
from segments.predictions.customers import CHURN_HORIZON_DAYS, MIN_CUSTOMERS
from segments.services.customers import customer_predictions_refresh
from segments.services.segments import segments_refresh

NOW = datetime(2026, 3, 1, 15, 30, tzinfo=UTC)
TZ = "America/New_York"


def _shop_with_orders(*, customers: int, seed: int = 11, days: int = 300, spread: bool = True):
    """Persons with 1-6 orders each over `days`, some refunded in part, some cancelled.

    Returns the shop and the orders as plain tuples, for the independent computation.
    """
    rng = np.random.default_rng(seed)
    shop = ShopFactory(timezone=TZ)
    persons = Person.objects.bulk_create(
        [
            Person(
                shop=shop,
                user_id=f"u{i}",
                first_seen_at=NOW - timedelta(days=days),
                last_seen_at=NOW - timedelta(days=int(rng.integers(0, days))),
            )
            for i in range(customers)
        ]
    )
    orders, plain = [], []
    for person in persons:
        # Buying rates spread as BG/NBD assumes (gamma across customers): customers who all buy
        # alike give degenerate fits (test_refresh_of_alike_customers_withholds_predictions).
        count = (
            1 + min(14, int(rng.poisson(rng.gamma(0.5, 4.0))))
            if spread
            else (int(rng.integers(1, 7)) if rng.random() < 0.6 else 1)
        )
        for _ in range(count):
            placed = NOW - timedelta(minutes=int(rng.integers(60, days * 24 * 60)))
            total = Decimal(int(rng.integers(500, 20000))) / 100
            refunded = (total / 2).quantize(Decimal("0.01")) if rng.random() < 0.1 else Decimal(0)
            cancelled = bool(rng.random() < 0.05)
            order_id = f"o{len(orders)}"
            orders.append(
                Order(
                    shop=shop,
                    person=person,
                    order_id=order_id,
                    placed_at=placed,
                    total=total,
                    refunded_amount=refunded,
                    is_cancelled=cancelled,
                )
            )
            plain.append((person.pk, placed, float(total), float(refunded), cancelled))
    Order.objects.bulk_create(orders)
    # An order after `now` and an order without a person are outside every customer's history.
    Order.objects.create(shop=shop, person=persons[0], order_id="late", placed_at=NOW, total=999)
    Order.objects.create(shop=shop, order_id="anon", placed_at=NOW - timedelta(days=1), total=5)
    return shop, plain


def _independent(plain: list[tuple]) -> pd.DataFrame:
    """Per customer, straight from the definitions (docs/customers.md), in the shop's days."""
    frame = pd.DataFrame(plain, columns=["person", "placed", "total", "refunded", "cancelled"])
    frame = frame[~frame["cancelled"]]
    frame["day"] = (
        pd.to_datetime(frame["placed"], utc=True)
        .dt.tz_convert(TZ)
        .dt.tz_localize(None)
        .dt.floor("D")
    )
    last_day = pd.Timestamp(NOW.astimezone(ZoneInfo(TZ)).replace(tzinfo=None)).floor("D")
    rows = {}
    for person, orders in frame.groupby("person"):
        per_day = orders.groupby("day")["total"].sum().sort_index()
        first, last = per_day.index[0], per_day.index[-1]
        rows[person] = {
            "order_count": len(orders),
            "revenue": (orders["total"] - orders["refunded"]).sum(),
            "frequency": len(per_day) - 1,
            "recency": (last - first).days,
            "T": (last_day - first).days,
            "monetary": per_day.iloc[1:].mean() if len(per_day) > 1 else 0.0,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


@pytest.mark.django_db
def test_refresh_matches_an_independent_computation():
    shop, plain = _shop_with_orders(customers=160)
    expected = _independent(plain)

    result = customer_predictions_refresh(shop_id=shop.pk, now=NOW)

    fit = CustomerModel.objects.get(shop=shop)
    assert (result.model, fit.kind, fit.customer_count) == ("bgnbd_gg", "bgnbd_gg", len(expected))
    assert fit.repeat_customer_count == int((expected["frequency"] > 0).sum())
    rows = pd.DataFrame.from_records(
        CustomerPrediction.objects.filter(shop=shop).values(), index="person_id"
    ).loc[expected.index]
    assert rows["order_count"].tolist() == expected["order_count"].tolist()
    assert np.allclose(rows["revenue"].astype(float), expected["revenue"], atol=0.005)
    assert rows["frequency"].tolist() == expected["frequency"].tolist()
    assert rows["recency_days"].tolist() == expected["recency"].astype(float).tolist()
    assert rows["tenure_days"].tolist() == expected["T"].astype(float).tolist()
    # The stored parameters maximise the likelihood of the independent summary …
    p = fit.parameters["bgnbd"]
    x, t_x, big_t = (expected[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    stored_ll = btyd.bgnbd_log_likelihood(p["r"], p["alpha"], p["a"], p["b"], x, t_x, big_t).sum()
    own = btyd.bgnbd_fit(x, t_x, big_t)
    assert stored_ll >= own.log_likelihood - 1e-3
    # … and every prediction is what they give on it.
    params = btyd.BgNbdParams(**p, log_likelihood=0, customer_count=0)
    spend = btyd.GammaGammaParams(
        **fit.parameters["gamma_gamma"], log_likelihood=0, customer_count=0
    )
    live = [o for o in plain if not o[4]]
    net_share = sum(o[2] - o[3] for o in live) / sum(o[2] for o in live)
    assert fit.parameters["net_share"] == pytest.approx(net_share)
    value = net_share * btyd.gamma_gamma_expected_value(
        spend, x, expected["monetary"].to_numpy(float)
    )
    orders_365 = btyd.bgnbd_expected_purchases(params, 365, x, t_x, big_t)
    assert np.allclose(
        rows["alive_probability"], btyd.bgnbd_probability_alive(params, x, t_x, big_t)
    )
    assert np.allclose(
        rows["expected_orders_90"], btyd.bgnbd_expected_purchases(params, 90, x, t_x, big_t)
    )
    assert np.allclose(rows["expected_orders_365"], orders_365)
    assert np.allclose(rows["expected_revenue_365"].astype(float), orders_365 * value, atol=0.005)
    assert np.allclose(
        rows["predicted_clv"].astype(float), expected["revenue"] + orders_365 * value, atol=0.011
    )
    assert np.allclose(
        rows["purchase_probability_30"], btyd.bgnbd_purchase_probability(params, 30, x, t_x, big_t)
    )
    risk = 1 - btyd.bgnbd_purchase_probability(params, CHURN_HORIZON_DAYS, x, t_x, big_t)
    assert np.allclose(rows["churn_risk"], risk)
    bands = np.where(risk >= 0.7, "high", np.where(risk >= 0.4, "medium", "low"))
    assert rows["churn_band"].tolist() == bands.tolist()
    assert set(rows["model"]) == {"bgnbd_gg"}


@pytest.mark.django_db
def test_refresh_of_a_small_shop_stores_history_and_says_why_there_are_no_predictions():
    shop, _ = _shop_with_orders(customers=30, days=60, spread=False)

    result = customer_predictions_refresh(shop_id=shop.pk, now=NOW)

    fit = CustomerModel.objects.get(shop=shop)
    assert (result.model, fit.kind) == ("none", "none")
    assert fit.reason.startswith(
        f"Predictions need at least {MIN_CUSTOMERS} customers with an order (this shop: 30)"
    )
    assert "90 days since the first order (this shop: 5" in fit.reason
    rows = CustomerPrediction.objects.filter(shop=shop)
    assert rows.count() == 30
    assert set(rows.values_list("model", "alive_probability", "predicted_clv", "churn_band")) == {
        ("none", None, None, "")
    }


@pytest.mark.django_db
def test_refresh_is_idempotent_and_drops_customers_without_orders():
    shop, _ = _shop_with_orders(customers=120)
    customer_predictions_refresh(shop_id=shop.pk, now=NOW)
    first = list(CustomerPrediction.objects.filter(shop=shop).order_by("pk").values())
    gone = first[0]["person_id"]

    customer_predictions_refresh(shop_id=shop.pk, now=NOW)
    again = list(CustomerPrediction.objects.filter(shop=shop).order_by("pk").values())
    Order.objects.filter(person_id=gone).update(is_cancelled=True)
    customer_predictions_refresh(shop_id=shop.pk, now=NOW + timedelta(days=1))

    assert again == first
    ids = set(CustomerPrediction.objects.filter(shop=shop).values_list("person_id", flat=True))
    assert ids == {row["person_id"] for row in first} - {gone}
    assert set(
        CustomerPrediction.objects.filter(shop=shop).values_list("fitted_at", flat=True)
    ) == {NOW + timedelta(days=1)}


@pytest.mark.django_db
def test_erased_person_disappears_from_predictions_and_predicted_segments():
    shop, _ = _shop_with_orders(customers=160)
    customer_predictions_refresh(shop_id=shop.pk, now=NOW)
    vip = Segment.objects.get(shop=shop, key="predicted_vip")
    person_id = SegmentMembership.objects.filter(segment=vip).values_list("person_id", flat=True)[0]
    user_id = Person.objects.get(pk=person_id).user_id
    PersonIdentifier.objects.create(
        shop=shop, person_id=person_id, kind=IdentifierKind.USER_ID, value=user_id
    )
    before = CustomerPrediction.objects.filter(shop=shop).count()

    request = persons_erase(shop=shop, user_id=user_id, now=NOW)

    assert not CustomerPrediction.objects.filter(person_id=person_id).exists()
    assert CustomerPrediction.objects.filter(shop=shop).count() == before - 1
    assert not SegmentMembership.objects.filter(person_id=person_id).exists()
    assert request.counts["persons"] == 1


@pytest.mark.django_db
def test_predicted_segments_follow_the_stored_predictions():
    shop, _ = _shop_with_orders(customers=160)

    customer_predictions_refresh(shop_id=shop.pk, now=NOW)

    rows = list(
        CustomerPrediction.objects.filter(shop=shop).values_list(
            "person_id", "revenue", "expected_revenue_365", "churn_band"
        )
    )
    expected = sorted(r[2] for r in rows)
    vip = {
        pid for pid, _, future, _ in rows if sum(e < future for e in expected) / len(rows) >= 0.95
    }
    revenue = sorted(r[1] for r in rows)
    high_value = {
        pid for pid, past, _, _ in rows if sum(v < past for v in revenue) / len(rows) >= 0.67
    }
    at_risk = {pid for pid, _, _, band in rows if band == "high"} & high_value
    members = {
        key: set(
            SegmentMembership.objects.filter(segment__shop=shop, segment__key=key).values_list(
                "person_id", flat=True
            )
        )
        for key in ("predicted_vip", "predicted_at_risk")
    }
    assert members == {"predicted_vip": vip, "predicted_at_risk": at_risk}
    assert 0 < len(vip) <= 0.05 * len(rows) + 1
    # The hourly segments refresh reads the same predictions and changes nothing.
    segments_refresh(shop_id=shop.pk, now=NOW + timedelta(hours=1))
    assert members["predicted_vip"] == set(
        SegmentMembership.objects.filter(
            segment__key="predicted_vip", segment__shop=shop
        ).values_list("person_id", flat=True)
    )


@pytest.mark.django_db
def test_refresh_of_alike_customers_withholds_predictions():
    # 150 customers each buying 1-6 times at uniform instants: no spread in their rates, and
    # with one more order this seed fits r near 1e10, where eq. 10 cannot be evaluated.
    shop, _ = _shop_with_orders(customers=150, spread=False)
    first = Person.objects.filter(shop=shop).order_by("pk").first()
    Order.objects.create(
        shop=shop, person=first, order_id="big", placed_at=NOW - timedelta(days=3), total=50_000
    )

    customer_predictions_refresh(shop_id=shop.pk, now=NOW)

    fit = CustomerModel.objects.get(shop=shop)
    assert fit.kind == "none"
    assert fit.reason.startswith("The model could not be fitted: the customers' purchase rates")
    assert set(CustomerPrediction.objects.filter(shop=shop).values_list("model", "churn_band")) == {
        ("none", "")
    }


@pytest.mark.django_db
def test_refresh_chooses_the_gbm_where_it_backtests_better_and_stores_age_bands():
    """The periodic shop of test_model_choice (in the DB, UTC): the refresh stores the GBM,
    the backtest's figures as customers_model_choose computes them on the same orders, the
    GBM's 90-day figures, and each customer's age band from their traits."""
    from segments.predictions.customers import (
        MODEL_RFM_GBM,
        customers_fit,
        customers_model_choose,
        customers_predict,
    )
    from segments.tests.test_model_choice import CUTOFF, _periodic_shop

    frame = _periodic_shop()
    shop = ShopFactory(timezone="UTC")
    now = CUTOFF.tz_localize("UTC").to_pydatetime()
    traits = [{"age": 30}, {"birth_date": "1950-05-01"}, {"birthday": "2015-01-01"}, {}]
    persons = Person.objects.bulk_create(
        [
            Person(
                shop=shop,
                user_id=f"p{i}",
                first_seen_at=now - timedelta(days=500),
                last_seen_at=now,
                traits=traits[i % 4],
            )
            for i in sorted(frame["customer_id"].unique())
        ]
    )
    ids = {
        f"p{i}": p.pk for i, p in zip(sorted(frame["customer_id"].unique()), persons, strict=True)
    }
    Order.objects.bulk_create(
        Order(
            shop=shop,
            person_id=ids[f"p{row.customer_id}"],
            order_id=f"o{n}",
            placed_at=row.ordered_at.tz_localize("UTC").to_pydatetime(),
            total=Decimal(str(round(row.value, 2))),
        )
        for n, row in enumerate(frame.itertuples())
    )

    result = customer_predictions_refresh(shop_id=shop.pk, now=now)

    stored = CustomerModel.objects.get(shop=shop)
    assert (result.model, stored.kind) == (MODEL_RFM_GBM, MODEL_RFM_GBM)
    # The same orders (totals rounded to cents, as stored) through the pure core.
    rounded = frame.assign(
        customer_id=frame["customer_id"].map(lambda i: ids[f"p{i}"]),
        value=frame["value"].round(2),
    )
    summary, fit = customers_fit(rounded, cutoff=CUTOFF)
    chosen = customers_model_choose(rounded, fit, cutoff=CUTOFF)
    assert stored.backtest["winner"] == MODEL_RFM_GBM
    for name, figures in chosen.backtest["figures"].items():
        for metric, value in figures.items():
            assert stored.backtest["figures"][name][metric] == pytest.approx(value, rel=1e-9)
    expected = customers_predict(summary, chosen, rounded)
    rows = pd.DataFrame.from_records(
        CustomerPrediction.objects.filter(shop=shop).values(), index="person_id"
    ).loc[summary.index]
    assert set(rows["model"]) == {MODEL_RFM_GBM}
    assert np.allclose(rows["expected_orders_90"], expected["expected_orders_90"])
    assert np.allclose(
        rows["expected_revenue_90"].astype(float), expected["expected_revenue_90"], atol=0.005
    )
    assert np.allclose(rows["purchase_probability_30"], expected["purchase_probability_30"])
    bands = dict(CustomerPrediction.objects.filter(shop=shop).values_list("person_id", "age_band"))
    assert bands[persons[0].pk] == "26-35"
    assert bands[persons[1].pk] == "66+"
    assert bands[persons[2].pk] == ""  # 11 years old: no band
    assert bands[persons[3].pk] == ""
