from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from analytics.params import PRODUCT_ORDERS
from analytics.services.rollups import rollups_rebuild, rollups_refresh
from analytics.tests.factories import (
    OrderFactory,
    RefundFactory,
    SessionEventFactory,
    SessionFactory,
)
from events.tests.factories import PersonFactory

DAY = "start=2026-01-05&end=2026-01-05"
NOW = datetime(2026, 1, 10, tzinfo=UTC)
ENDPOINTS = [
    "session_count",
    "user_count",
    "visit_conversion",
    "product_visits",
    "funnel",
    "kpis",
    "trends",
    "insights",
    "products",
    "abandoned_carts",
    "retention",
    "geography",
    "audience",
    "live",
]
FUNNEL = "steps=product_view,add_to_cart,purchase"


def at(hour: int, minute: int = 0, day: int = 5) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


def url(shop, name: str, extra: str = "") -> str:
    query = f"shop={shop.domain}&{DAY}"
    if name == "funnel":
        query += "&" + FUNNEL
    return f"/analytics/{name}/?{query}{'&' + extra if extra else ''}"


def session_with(shop, person, started_at, types, **attributes):
    session = SessionFactory(shop=shop, person=person, started_at=started_at, **attributes)
    for offset, (kind, extra) in enumerate(types):
        SessionEventFactory(
            session=session, type=kind, occurred_at=started_at + timedelta(minutes=offset), **extra
        )
    return session


@pytest.fixture
def store(shop):
    """Three sessions on 2026-01-05 (converted, bounce, abandoned cart) and one on 01-06."""
    alice = PersonFactory(shop=shop, user_id="alice", first_seen_at=at(10))
    bob = PersonFactory(shop=shop, first_seen_at=at(11))
    carol = PersonFactory(shop=shop, user_id="carol", first_seen_at=at(14))
    view = {"product_id": "p1", "product_name": "Mug"}
    session_with(
        shop,
        alice,
        at(10),
        [
            ("page_view", {}),
            ("product_view", view),
            ("add_to_cart", {**view, "product_price": Decimal(20), "product_quantity": 2}),
            ("purchase", {}),
        ],
        utm_source="google",
        device="desktop",
        country="US",
        is_converted=True,
    )
    session_with(
        shop,
        bob,
        at(11),
        [("page_view", {})],
        utm_source="facebook",
        device="mobile",
        country="DE",
        is_bounce=True,
    )
    session_with(
        shop,
        carol,
        at(14),
        [
            ("product_view", view),
            ("product_view", {"product_id": "p2", "product_name": "Hat"}),
            ("add_to_cart", {"product_id": "p2", "product_price": Decimal(15)}),
        ],
        utm_source="google",
        device="mobile",
        country="US",
    )
    session_with(shop, alice, at(9, day=6), [("page_view", {})], utm_source="google")
    OrderFactory(shop=shop, placed_at=at(10, 30), total=Decimal(100), user_id="alice")
    OrderFactory(shop=shop, placed_at=at(15), total=Decimal(50), user_id="carol")
    OrderFactory(shop=shop, placed_at=at(16), total=Decimal(70), is_cancelled=True)
    RefundFactory(shop=shop, refunded_at=at(18), amount=Decimal(10))
    rollups_refresh(shop_id=shop.pk, now=NOW)
    return shop


@pytest.mark.django_db
@pytest.mark.parametrize("name", ENDPOINTS)
def test_anonymous_gets_401(store, name):
    response = APIClient().get(url(store, name))

    assert response.status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("name", ENDPOINTS)
def test_another_shop_gets_404(store, other_shop, api_client, name):
    response = api_client.get(url(other_shop, name))

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_endpoint_answers_json_and_csv(store, api_client, name):
    response = api_client.get(url(store, name))
    csv_response = api_client.get(url(store, name, "format=csv"))

    assert response.status_code == 200
    assert csv_response.status_code == 200
    assert csv_response["Content-Type"].startswith("text/csv")
    assert csv_response.content.decode().count("\n") >= 2


@pytest.mark.django_db
def test_counts_and_conversion(store, api_client):
    sessions = api_client.get(url(store, "session_count")).json()
    users = api_client.get(url(store, "user_count")).json()
    conversion = api_client.get(url(store, "visit_conversion")).json()
    google = api_client.get(url(store, "session_count", "utm_source=google")).json()
    google_users = api_client.get(url(store, "user_count", "utm_source=google")).json()

    assert (sessions["session_count"], sessions["bounce_count"]) == (3, 1)
    assert users["user_count"] == 3
    assert conversion | {} == {
        "sessions": 3,
        "converted_sessions": 1,
        "rate": 0.333333,
        "start": "2026-01-05",
        "end": "2026-01-05",
    }
    assert google["session_count"] == 2
    assert google_users["user_count"] == 2


@pytest.mark.django_db
def test_kpis_with_previous_period(store, api_client):
    response = api_client.get(
        f"/analytics/kpis/?shop={store.domain}&start=2026-01-06&end=2026-01-06&compare=previous"
    )

    body = response.json()
    assert (body["revenue"], body["orders"], body["visitors"]) == ("0.00", 0, 1)
    assert (body["new_visitors"], body["returning_visitors"]) == (0, 1)
    previous = body["previous"]
    assert previous["revenue"] == "140.00"
    assert previous["orders"] == 2
    assert previous["aov"] == "70.00"
    assert previous["refunds"] == "10.00"
    assert previous["customers"] == 2
    assert previous["visit_conversion"] == 0.333333
    assert previous["cart_abandonment"] == 0.5
    assert (previous["new_visitors"], previous["returning_visitors"]) == (3, 0)
    assert previous["clv"] == "46.67"


@pytest.mark.django_db
def test_session_funnel_and_breakdown(store, api_client):
    body = api_client.get(url(store, "funnel", "breakdown=device")).json()

    assert [(s["step"], s["count"], s["conversion"]) for s in body["steps"]] == [
        ("product_view", 2, 1.0),
        ("add_to_cart", 2, 1.0),
        ("purchase", 1, 0.5),
    ]
    assert body["median_seconds_to_convert"] == 120.0
    by_device = {b["value"]: [s["count"] for s in b["result"]["steps"]] for b in body["breakdown"]}
    assert by_device == {"desktop": [1, 1, 1], "mobile": [1, 1, 0]}


@pytest.mark.django_db
def test_strict_person_funnel(store, api_client):
    body = api_client.get(url(store, "funnel", "unit=person&mode=strict")).json()

    assert [s["count"] for s in body["steps"]] == [2, 2, 1]


@pytest.mark.django_db
def test_products_and_abandoned_carts(store, api_client):
    products = api_client.get(url(store, "products")).json()
    carts = api_client.get(url(store, "abandoned_carts")).json()

    assert [
        (p["product_id"], p["views"], p["carts"], p["abandoned_carts"]) for p in products["rows"]
    ] == [
        ("p1", 2, 1, 0),
        ("p2", 1, 1, 1),
    ]
    assert products["most_abandoned"]["product_id"] == "p2"
    assert (carts["rate"], carts["cart_sessions"], carts["value"]) == (0.5, 2, "15.00")
    assert [row["user_id"] for row in carts["rows"]] == ["carol"]


@pytest.mark.django_db
def test_trends_retention_geography_insights(store, api_client):
    base = f"shop={store.domain}&start=2026-01-05&end=2026-01-06"
    trends = api_client.get(f"/analytics/trends/?{base}&interval=day").json()
    retention = api_client.get(f"/analytics/retention/?{base}").json()
    geography = api_client.get(url(store, "geography")).json()
    insights = api_client.get(url(store, "insights")).json()

    assert [(p["bucket"], p["sessions"], p["visitors"], p["revenue"]) for p in trends["rows"]] == [
        ("2026-01-05", 3, 3, "140.00"),
        ("2026-01-06", 1, 1, "0.00"),
    ]
    assert (trends["peak_weekday"], trends["heat_map"][0][10]) == ("Monday", 1)
    assert retention["rows"][0]["active"] == [3]
    assert [(r["country"], r["sessions"]) for r in geography["rows"]] == [("US", 2), ("DE", 1)]
    assert insights["best_source"] == "google"
    assert insights["most_abandoned_product"] == "p2"


@pytest.mark.django_db
def test_live_stream_after_id(store, api_client):
    first = api_client.get(f"/analytics/live/?shop={store.domain}&limit=3").json()
    rest = api_client.get(
        f"/analytics/live/?shop={store.domain}&since_id={first['last_id']}"
    ).json()

    assert len(first["rows"]) == 3
    assert set(first["rows"][0]) == {
        "id", "type", "occurred_at", "anonymous_id", "user_id", "url", "product_id",
        "product_name", "country",
    }  # fmt: skip
    assert rest["rows"] == []


@pytest.mark.django_db
def test_cache_answers_until_new_events_are_processed(
    store, api_client, django_capture_on_commit_callbacks
):
    before = api_client.get(url(store, "session_count")).json()
    late = PersonFactory(shop=store, first_seen_at=at(20))
    session_with(store, late, at(20), [("page_view", {})])
    cached = api_client.get(url(store, "session_count")).json()

    with django_capture_on_commit_callbacks(execute=True):
        rollups_refresh(shop_id=store.pk, now=NOW)

    after = api_client.get(url(store, "session_count")).json()
    assert (before["session_count"], cached["session_count"], after["session_count"]) == (3, 3, 4)


@pytest.mark.django_db
def test_rebuild_matches_incremental_refresh(store, api_client):
    incremental = api_client.get(url(store, "kpis")).json()

    rollups_rebuild(shop_id=store.pk, now=NOW)

    assert api_client.get(url(store, "kpis")).json() == incremental


@pytest.mark.django_db
def test_products_query_count_does_not_grow_with_rows(store, api_client, django_assert_num_queries):
    PersonFactory(shop=store)
    for index in range(5):
        SessionEventFactory(
            session__shop=store, session__started_at=at(20), type="product_view",
            product_id=f"extra-{index}",
        )  # fmt: skip
    rollups_refresh(shop_id=store.pk, now=NOW)

    # The shop lookup and one read of the product rollups, however many products; then only the
    # shop from cache.
    with django_assert_num_queries(2):
        cold = api_client.get(url(store, "products"))
    with django_assert_num_queries(1):
        warm = api_client.get(url(store, "products"))

    assert len(cold.json()["rows"]) == 7
    assert warm.json() == cold.json()


@pytest.mark.django_db
def test_invalid_parameters_are_rejected(store, api_client):
    response = api_client.get(f"/analytics/kpis/?shop={store.domain}&start=2026-13-01")
    funnel = api_client.get(f"/analytics/funnel/?shop={store.domain}&steps=purchase")

    assert response.status_code == 400
    assert response.json()["fields"] == {"start": ["expected YYYY-MM-DD"]}
    assert funnel.status_code == 400


PERIOD_ENDPOINTS = [name for name in ENDPOINTS if name != "live"]
# (query, field): days whose arithmetic overflowed into a 500; the bounds themselves are tested on
# the parser in clickserver/tests/test_params.py.
BAD_PERIODS = [("end=0001-01-01", "end"), ("start=9999-12-01&end=9999-12-31", "start")]


@pytest.mark.django_db
@pytest.mark.parametrize("name", PERIOD_ENDPOINTS)
@pytest.mark.parametrize(("query", "field"), BAD_PERIODS)
def test_every_endpoint_rejects_an_unusable_period(shop, api_client, name, query, field):
    steps = f"&{FUNNEL}" if name == "funnel" else ""
    message = f"must be between 2000-01-01 and {latest_day()}"

    response = api_client.get(f"/analytics/{name}/?shop={shop.domain}&{query}{steps}")

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": f"{field}: {message}",
        "fields": {field: [message]},
    }


def latest_day() -> str:
    return (datetime.now(UTC).date() + timedelta(days=366)).isoformat()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "query", "field", "message"),
    [
        ("products", "limit=", "limit", "expected an integer"),
        ("products", "order_by=price", "order_by", "must be one of " + ", ".join(PRODUCT_ORDERS)),
        ("trends", "interval=", "interval", "must be one of hour, day, week, month"),
        ("audience", "breakdown=country", "breakdown", "must be one of age_band, visitor_type"),
        ("funnel", f"{FUNNEL}&window=", "window", "expected an integer"),
    ],
)
def test_parameters_outside_their_documented_values_are_rejected(
    shop, api_client, name, query, field, message
):
    response = api_client.get(f"/analytics/{name}/?shop={shop.domain}&{query}")

    assert response.status_code == 400
    assert response.json()["fields"] == {field: [message]}
