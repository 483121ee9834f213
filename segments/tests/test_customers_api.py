"""GET /segments/customers/, /segments/customers/<person>/ (and a session's events),
/segments/forecast/: authentication, shop scoping, rejections in the envelope, the answers."""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from events.identity import email_hash
from events.models import IdentifierKind, Order, PersonIdentifier, Refund
from events.tests.factories import EventFactory, PersonFactory
from segments.models import CustomerModel, CustomerPrediction, SegmentMembership
from segments.services.segments import segments_refresh
from segments.tests.factories import OrderFactory, SegmentFactory, SessionFactory

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PATHS = ["/segments/customers/", "/segments/forecast/"]


def _customer(shop, user_id, *, revenue, orders, churn, clv, last_seen, model="bgnbd_gg"):
    person = PersonFactory(shop=shop, user_id=user_id, first_seen_at=NOW, last_seen_at=last_seen)
    CustomerPrediction.objects.create(
        person=person,
        shop=shop,
        order_count=orders,
        revenue=Decimal(revenue),
        first_order_at=NOW,
        last_order_at=NOW,
        frequency=orders - 1,
        recency_days=10.0,
        tenure_days=30.0,
        alive_probability=0.9,
        expected_orders_90=0.5,
        expected_orders_365=2.0,
        expected_revenue_90=Decimal("25.00"),
        expected_revenue_365=Decimal("100.00"),
        predicted_clv=clv,
        purchase_probability_30=0.2,
        next_order_at=NOW + timedelta(days=40),
        churn_risk=churn,
        churn_band="" if churn is None else "low",
        model=model,
        fitted_at=NOW,
    )
    return person


@pytest.fixture
def three(shop):
    return [
        _customer(
            shop,
            "ann",
            revenue="50.00",
            orders=3,
            churn=0.2,
            clv=Decimal("150.00"),
            last_seen=NOW - timedelta(days=1),
        ),
        _customer(
            shop,
            "bob",
            revenue="500.00",
            orders=1,
            churn=0.9,
            clv=Decimal("600.00"),
            last_seen=NOW - timedelta(days=9),
        ),
        _customer(
            shop,
            "cat",
            revenue="120.00",
            orders=2,
            churn=0.5,
            clv=Decimal("220.00"),
            last_seen=NOW - timedelta(days=4),
        ),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("path", [*PATHS, "/segments/customers/1/"])
def test_customer_endpoints_require_authentication(shop, path):
    response = APIClient().get(path, {"shop": shop.domain})

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_customer_list_with_a_token_is_scoped_to_the_users_shops(user, shop, other_shop, three):
    _customer(other_shop, "zed", revenue="9.00", orders=1, churn=0.1, clv=None, last_seen=NOW)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    mine = client.get("/segments/customers/", {"shop": shop.domain})
    theirs = client.get("/segments/customers/", {"shop": other_shop.domain})

    assert mine.status_code == 200
    assert [row["user_id"] for row in mine.json()["results"]] == ["bob", "cat", "ann"]
    assert theirs.status_code == 404
    assert theirs.json() == {"code": "not_found", "detail": "No such shop.", "fields": {}}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        (None, ["bob", "cat", "ann"]),
        ("revenue", ["ann", "cat", "bob"]),
        ("-orders", ["ann", "cat", "bob"]),
        ("-last_seen", ["ann", "cat", "bob"]),
        ("last_seen", ["bob", "cat", "ann"]),
        ("-predicted_clv", ["bob", "cat", "ann"]),
        ("-churn_risk", ["bob", "cat", "ann"]),
        ("churn_risk", ["ann", "cat", "bob"]),
    ],
)
def test_customer_list_sorts(api_client, shop, three, sort, expected):
    params = {"shop": shop.domain} | ({"sort": sort} if sort else {})

    response = api_client.get("/segments/customers/", params)

    assert [row["user_id"] for row in response.json()["results"]] == expected


@pytest.mark.django_db
def test_customer_list_rows_and_pages(api_client, shop, three, django_assert_num_queries):
    with django_assert_num_queries(4):  # the shop; the count, the page, its persons
        response = api_client.get(
            "/segments/customers/", {"shop": shop.domain, "page_size": 2, "page": 2}
        )

    body = response.json()
    assert (body["count"], body["next"]) == (3, None)
    assert body["results"] == [
        {
            "person_id": three[0].pk,
            "user_id": "ann",
            "first_seen_at": "2026-03-01T12:00:00Z",
            "last_seen_at": "2026-02-28T12:00:00Z",
            "order_count": 3,
            "revenue": "50.00",
            "first_order_at": "2026-03-01T12:00:00Z",
            "last_order_at": "2026-03-01T12:00:00Z",
            "predicted_clv": "150.00",
            "expected_revenue_365": "100.00",
            "alive_probability": 0.9,
            "purchase_probability_30": 0.2,
            "churn_risk": 0.2,
            "churn_band": "low",
            "next_order_at": "2026-04-10T12:00:00Z",
            "model": "bgnbd_gg",
            "fitted_at": "2026-03-01T12:00:00Z",
            "age_band": "",
        }
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"sort": "email"}, "sort"),
        ({"sort": "-revenue; DROP TABLE x"}, "sort"),
        ({"q": "x" * 256}, "q"),
        ({"page_size": "0"}, "page_size"),
        ({"age_band": "20-30"}, "age_band"),
        ({"age_band": "66"}, "age_band"),
    ],
)
def test_customer_list_rejects_bad_input_in_the_envelope(api_client, shop, three, params, field):
    response = api_client.get("/segments/customers/", {"shop": shop.domain, **params})

    assert response.status_code == 400
    body = response.json()
    assert (body["code"], list(body["fields"])) == ("invalid", [field])


@pytest.mark.django_db
def test_customer_list_page_beyond_the_end_is_404(api_client, shop, three):
    response = api_client.get("/segments/customers/", {"shop": shop.domain, "page": 2})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.django_db
def test_customer_list_searches_identifiers_exactly(api_client, shop, three):
    ann, bob, _ = three
    PersonIdentifier.objects.create(
        shop=shop, person=bob, kind=IdentifierKind.ANONYMOUS_ID, value="anon-7"
    )
    PersonIdentifier.objects.create(
        shop=shop, person=ann, kind=IdentifierKind.EMAIL_HASH, value=email_hash("Ann@Example.com")
    )

    def found(q):
        response = api_client.get("/segments/customers/", {"shop": shop.domain, "q": q})
        return [row["user_id"] for row in response.json()["results"]]

    assert found("anon-7") == ["bob"]
    assert found("cat") == ["cat"]
    assert found(" ann@example.com ") == ["ann"]
    assert found(email_hash("ann@example.com").upper()) == ["ann"]
    assert found("anon") == []
    assert found("f" * 64) == []
    # An empty search box lists everyone.
    assert sorted(found("")) == sorted(found("  ")) == ["ann", "bob", "cat"]


@pytest.mark.django_db
def test_customer_list_as_csv(api_client, shop, three):
    response = api_client.get("/segments/customers/", {"shop": shop.domain, "format": "csv"})

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="customers.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["user_id"], r["revenue"], r["churn_band"]) for r in rows] == [
        ("bob", "500.00", "low"),
        ("cat", "120.00", "low"),
        ("ann", "50.00", "low"),
    ]


@pytest.mark.django_db
def test_customer_of_another_shop_is_404(api_client, shop, other_shop):
    stranger = PersonFactory(shop=other_shop)
    session = SessionFactory(person=stranger)

    profile = api_client.get(f"/segments/customers/{stranger.pk}/", {"shop": shop.domain})
    events = api_client.get(
        f"/segments/customers/{stranger.pk}/sessions/{session.pk}/events/", {"shop": shop.domain}
    )

    assert profile.status_code == events.status_code == 404
    assert profile.json() == {"code": "not_found", "detail": "No such customer.", "fields": {}}


@pytest.mark.django_db
def test_customer_session_of_another_person_is_404(api_client, shop):
    person, other = PersonFactory.create_batch(2, shop=shop)
    session = SessionFactory(person=other)

    response = api_client.get(
        f"/segments/customers/{person.pk}/sessions/{session.pk}/events/", {"shop": shop.domain}
    )

    assert response.status_code == 404
    assert response.json()["detail"] == "No such session."


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["-1", "201", "many"])
def test_customer_profile_rejects_a_bad_session_count(api_client, shop, value):
    person = PersonFactory(shop=shop)

    response = api_client.get(
        f"/segments/customers/{person.pk}/", {"shop": shop.domain, "sessions": value}
    )

    assert response.status_code == 400
    assert response.json()["fields"] == {"sessions": ["an integer from 0 to 200"]}


@pytest.mark.django_db
def test_customer_profile(api_client, shop):
    person = PersonFactory(
        shop=shop,
        user_id="u-1",
        first_seen_at=NOW - timedelta(days=30),
        last_seen_at=NOW,
        traits={"name": "<b>Ann</b>", "city": "Leeds"},
    )
    PersonIdentifier.objects.create(
        shop=shop, person=person, kind=IdentifierKind.ANONYMOUS_ID, value="anon-1"
    )
    older = SessionFactory(person=person, started_at=NOW - timedelta(days=3))
    newer = SessionFactory(person=person, started_at=NOW - timedelta(days=1))
    EventFactory(
        shop=shop,
        person=person,
        session=newer,
        type="page_view",
        occurred_at=newer.started_at,
        url="https://shop/a",
    )
    EventFactory(
        shop=shop,
        person=person,
        session=newer,
        type="purchase",
        occurred_at=newer.started_at + timedelta(minutes=2),
        order_id="o-1",
        revenue=Decimal("80.00"),
    )
    order = OrderFactory(
        person=person,
        order_id="o-1",
        total=Decimal("80.00"),
        refunded_amount=Decimal("30.00"),
        placed_at=NOW - timedelta(days=1),
    )
    Refund.objects.create(
        shop=shop, refund_id="r-1", order=order, amount=Decimal("30.00"), refunded_at=NOW
    )
    OrderFactory(
        person=person,
        order_id="o-0",
        total=Decimal("15.00"),
        is_cancelled=True,
        placed_at=NOW - timedelta(days=2),
    )
    segment = SegmentFactory(shop=shop, name="Fans")
    SegmentMembership.objects.create(segment=segment, person=person, since=NOW)

    response = api_client.get(
        f"/segments/customers/{person.pk}/", {"shop": shop.domain, "sessions": 1}
    )
    events = api_client.get(
        f"/segments/customers/{person.pk}/sessions/{newer.pk}/events/", {"shop": shop.domain}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["identities"] == {
        "user_id": "u-1",
        "anonymous_ids": ["anon-1"],
        "email_hashes": [],
        "shopify_customer_ids": [],
    }
    assert body["traits"] == {"name": "<b>Ann</b>", "city": "Leeds"}
    assert (body["session_count"], [s["id"] for s in body["sessions"]]) == (2, [newer.pk])
    assert older.pk not in [s["id"] for s in body["sessions"]]
    assert (body["order_count"], body["revenue"]) == (1, "50.00")
    assert [(o["order_id"], o["net_revenue"], o["is_cancelled"]) for o in body["orders"]] == [
        ("o-1", "50.00", False),
        ("o-0", "0.00", True),
    ]
    assert body["orders"][0]["refunds"] == [
        {"refund_id": "r-1", "amount": "30.00", "refunded_at": "2026-03-01T12:00:00Z"}
    ]
    assert [(s["name"], s["since"]) for s in body["segments"]] == [("Fans", "2026-03-01T12:00:00Z")]
    assert body["prediction"] is None
    assert body["model"]["kind"] == "none"
    assert body["model"]["minimums"] == {
        "customers": 100,
        "repeat_customers": 20,
        "history_days": 90,
    }
    assert (body["conversion_score"], body["experiments"]) == (None, [])
    assert [(e["type"], e["revenue"]) for e in events.json()] == [
        ("page_view", None),
        ("purchase", "80.00"),
    ]


@pytest.mark.django_db
def test_customer_profile_shows_the_prediction_and_its_path(api_client, shop, three):
    CustomerModel.objects.create(
        shop=shop,
        kind="bgnbd_gg",
        fitted_at=NOW,
        customer_count=3,
        parameters={
            "bgnbd": {"r": 0.7, "alpha": 60.0, "a": 0.5, "b": 2.0},
            "gamma_gamma": {"p": 2.0, "q": 3.0, "v": 100.0},
            "net_share": 1.0,
        },
    )

    body = api_client.get(f"/segments/customers/{three[0].pk}/", {"shop": shop.domain}).json()

    prediction = body["prediction"]
    assert (prediction["predicted_clv"], prediction["churn_band"]) == ("150.00", "low")
    path = prediction["predicted_path"]
    assert [p["days"] for p in path] == [30, 60, 90, 180, 270, 365]
    # The path's value per order is the stored 365-day revenue over the stored orders (50 each).
    assert all(
        Decimal(p["cumulative_revenue"])
        == round(Decimal("50.00") + Decimal(str(round(p["expected_orders"] * 50, 2))), 2)
        for p in path
    )
    assert path[0]["expected_orders"] < path[-1]["expected_orders"]


@pytest.mark.django_db
def test_revenue_forecast(api_client, shop):
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    for day in range(1, 85):
        for n in range(3 + day % 7):
            Order.objects.create(
                shop=shop,
                order_id=f"o{day}-{n}",
                total=Decimal("20.00"),
                placed_at=today - timedelta(days=day),
            )

    response = api_client.get("/segments/forecast/", {"shop": shop.domain})

    body = response.json()
    assert (response.status_code, body["reason"], len(body["days"])) == (200, "", 28)
    first = body["days"][0]
    assert first["date"] == today.date().isoformat()
    for series in (first["revenue"], first["orders"]):
        assert series["lower_95"] <= series["lower_80"] <= series["point"] <= series["upper_80"]
        assert series["upper_80"] <= series["upper_95"]


@pytest.mark.django_db
def test_revenue_forecast_without_history_says_why(api_client, shop):
    response = api_client.get("/segments/forecast/", {"shop": shop.domain})

    assert response.json()["days"] == []
    assert response.json()["reason"] == "Too few days with orders in the last 84 days to forecast."


@pytest.mark.django_db
def test_predicted_segment_is_usable_as_experiment_targeting(api_client, shop, three):
    segments_refresh(shop_id=shop.pk, now=NOW)

    segments = {s["key"]: s for s in api_client.get("/segments/", {"shop": shop.domain}).json()}

    assert segments["predicted_vip"]["name"] == "Predicted VIP"
    assert segments["predicted_at_risk"]["name"] == "At risk: high value, high churn risk"


@pytest.mark.django_db
def test_customer_list_filters_and_breaks_down_by_age_band(api_client, shop, other_shop, three):
    CustomerPrediction.objects.filter(person=three[0]).update(age_band="26-35")
    CustomerPrediction.objects.filter(person=three[1]).update(age_band="66+")
    _customer(other_shop, "zed", revenue="9.00", orders=1, churn=0.1, clv=None, last_seen=NOW)
    CustomerPrediction.objects.filter(shop=other_shop).update(age_band="26-35")

    def ids(band, sort="-revenue"):
        params = {"shop": shop.domain, "age_band": band, "sort": sort}
        return [
            r["person_id"] for r in api_client.get("/segments/customers/", params).json()["results"]
        ]

    assert ids("26-35") == [three[0].pk]
    assert ids("66+", sort="-last_seen") == [three[1].pk]
    assert ids("none") == [three[2].pk]
    assert ids("18-25") == []

    response = api_client.get("/segments/customers/age-bands/", {"shop": shop.domain})
    assert response.status_code == 200
    by_band = {row["age_band"]: row for row in response.json()}
    assert list(by_band) == ["18-25", "26-35", "36-45", "46-55", "56-65", "66+", "none"]
    assert by_band["26-35"] == {
        "age_band": "26-35",
        "customers": 1,
        "revenue": "50.00",
        "predicted_clv": "150.00",
    }
    assert by_band["18-25"] == {
        "age_band": "18-25",
        "customers": 0,
        "revenue": "0.00",
        "predicted_clv": None,
    }
    assert by_band["none"]["customers"] == 1
    assert (
        APIClient().get("/segments/customers/age-bands/", {"shop": shop.domain}).status_code == 401
    )
    assert (
        api_client.get("/segments/customers/age-bands/", {"shop": other_shop.domain}).status_code
        == 404
    )


@pytest.mark.django_db
def test_customer_model_shows_the_choice_and_its_figures(api_client, shop):
    backtest = {
        "ran": True,
        "cutoff": "2025-11-27",
        "holdout_end": "2026-02-25",
        "figures": {"rfm_gbm": {"revenue_mae": 47.9}, "bgnbd_gg": {"revenue_mae": 99.9}},
        "wins": {"revenue_mae": True, "revenue_spearman": True, "revenue_gini": False},
        "winner": "rfm_gbm",
    }
    CustomerModel.objects.create(shop=shop, kind="rfm_gbm", fitted_at=NOW, backtest=backtest)

    body = api_client.get("/segments/customers/model/", {"shop": shop.domain}).json()

    assert (body["kind"], body["backtest"]) == ("rfm_gbm", backtest)
    assert "at least two of" in body["choice_rule"]


@pytest.mark.django_db
def test_revenue_forecast_equals_the_model_run_independently(api_client, shop):
    """The endpoint's days against forecast.series_forecast on a series built here with pandas
    from the same orders (net of refunds, cancelled ones left out, the shop's local days)."""
    import numpy as np
    import pandas as pd

    from segments.predictions.forecast import series_forecast

    shop.timezone = "Europe/Berlin"
    shop.save(update_fields=["timezone"])
    rng = np.random.default_rng(4)
    now = datetime.now(UTC)
    tz = "Europe/Berlin"
    today = pd.Timestamp(now).tz_convert(tz).normalize()
    plain = []
    for day in range(1, 100):
        if (today - pd.Timedelta(days=day)).weekday() == 6:
            continue  # closed on Sundays
        for n in range(int(rng.poisson(4 + 0.05 * day))):
            placed = (
                today
                - pd.Timedelta(days=day)
                + pd.Timedelta(hours=9, minutes=int(rng.integers(0, 600)))
            )
            total = Decimal(int(rng.integers(1000, 9000))) / 100
            refunded = (total / 4).quantize(Decimal("0.01")) if rng.random() < 0.1 else Decimal(0)
            cancelled = bool(rng.random() < 0.05)
            Order.objects.create(
                shop=shop,
                order_id=f"o{day}-{n}",
                total=total,
                refunded_amount=refunded,
                is_cancelled=cancelled,
                placed_at=placed.tz_convert("UTC").to_pydatetime(),
            )
            plain.append((placed.tz_localize(None), float(total - refunded), cancelled))

    body = api_client.get("/segments/forecast/", {"shop": shop.domain}).json()

    frame = pd.DataFrame(plain, columns=["at", "net", "cancelled"])
    frame = frame[~frame["cancelled"]]
    start = today.tz_localize(None) - pd.Timedelta(days=84)
    window = frame[(frame["at"] >= start) & (frame["at"] < today.tz_localize(None))]
    days = pd.date_range(start, periods=84, freq="D")
    by_day = window.groupby(window["at"].dt.normalize())
    revenue = by_day["net"].sum().reindex(days, fill_value=0.0)
    orders = by_day.size().reindex(days, fill_value=0).astype(float)
    expected_revenue = series_forecast(revenue, activity=orders, horizon_days=28)
    expected_orders = series_forecast(orders, horizon_days=28)
    assert len(body["days"]) == 28
    assert body["reason"] == ""
    for answer, day in zip(body["days"], expected_revenue.index, strict=True):
        assert answer["date"] == day.date().isoformat()
        for name, table in (("revenue", expected_revenue), ("orders", expected_orders)):
            for key, value in table.loc[day].items():
                assert answer[name][key] == pytest.approx(round(float(value), 2), abs=0.006)
    assert any(day["revenue"]["point"] == 0 for day in body["days"])  # the Sundays
