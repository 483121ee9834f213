from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from events.models import Session
from events.storefront_auth import identity_token_compute
from events.tests.factories import EventFactory, PersonFactory, PersonIdentifierFactory
from recommendations import selectors, services, tasks
from recommendations.models import ProductAffinity
from recommendations.tests.factories import ProductAffinityFactory, ProductFactory

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PATHS = ["/api/crowd_favorites/", "/api/featured_collection/", "/api/pick_up_where_you_left_off/"]


def _event(shop, product_id, event_type="product_view", *, at, person=None, **fields):
    return EventFactory(
        shop=shop, person=person, type=event_type, product_id=product_id, occurred_at=at, **fields
    )


def _get(key_shop, path, headers=None, **params):
    headers = {"X-Write-Key": key_shop.write_key, **(headers or {})}
    return APIClient().get(path, params, headers=headers)


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [p["product_id"] for p in response.json()["products"]]


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_storefront_endpoints_reject_an_unknown_write_key(shop, path):
    response = APIClient().get(path, {"anonymous_id": "a"}, headers={"X-Write-Key": "wk_nope"})

    assert response.status_code == 401
    assert response.json() == {
        "code": "not_authenticated",
        "detail": "Unknown or missing write key.",
        "fields": {},
    }


@pytest.mark.django_db
def test_storefront_endpoints_reject_a_key_of_another_shop(shop, other_shop):
    response = _get(other_shop, PATHS[0], shop=shop.domain)

    assert response.status_code == 401


@pytest.mark.django_db
def test_crowd_scores_weigh_event_types_and_decay_with_age(shop):
    _event(shop, "A", "purchase", at=NOW - timedelta(hours=1))
    _event(shop, "B", "add_to_cart", at=NOW - timedelta(hours=2))
    _event(shop, "B", "add_to_cart", at=NOW - timedelta(hours=3))
    _event(shop, "C", at=NOW - timedelta(days=7))
    _event(shop, "C", at=NOW - timedelta(days=7))
    _event(shop, "D", "purchase", at=NOW - timedelta(days=31))

    scores = selectors.crowd_scores_get(shop=shop, now=NOW)

    assert scores == {"A": 5.0, "B": 4.0, "C": 1.0}


@pytest.mark.django_db
def test_crowd_favorites_with_catalogue_names(shop):
    now = timezone.now()
    ProductFactory(shop=shop, product_id="A", title="Alpha", price="9.50")
    _event(shop, "A", "purchase", at=now - timedelta(minutes=1))
    _event(shop, "B", at=now - timedelta(minutes=1), product_name="Beta")
    ProductFactory(shop=shop, product_id="X", is_available=False)
    _event(shop, "X", "purchase", at=now - timedelta(minutes=1))

    response = _get(shop, PATHS[0], shop=shop.domain)

    products = response.json()["products"]
    assert [(p["product_id"], p["name"], p["price"], p["reason"]) for p in products] == [
        ("A", "Alpha", 9.5, "popular"),
        ("B", "Beta", None, "popular"),
    ]


@pytest.mark.django_db
def test_featured_collection_uses_affinity_excludes_bought_and_fills_with_favorites(shop):
    now = timezone.now()
    person = PersonFactory(shop=shop)
    PersonIdentifierFactory(person=person, value="anon-42")
    _event(shop, "X", at=now - timedelta(minutes=5), person=person)
    _event(shop, "W", "purchase", at=now - timedelta(days=2), person=person)
    for other, score in (("Y", 0.9), ("W", 0.8), ("Z", 0.5)):
        ProductAffinityFactory(shop=shop, product_id="X", other_product_id=other, score=score)
    _event(shop, "P", "purchase", at=now - timedelta(minutes=1))

    response = _get(shop, PATHS[1], anonymous_id="anon-42", limit=4)

    assert _ids(response) == ["Y", "Z", "P", "X"]
    assert [p["reason"] for p in response.json()["products"]] == [
        "also_viewed",
        "also_viewed",
        "popular",
        "popular",
    ]


@pytest.mark.django_db
def test_featured_collection_falls_back_to_crowd_favorites_for_an_unknown_person(shop):
    now = timezone.now()
    _event(shop, "P", "purchase", at=now - timedelta(minutes=1))
    _event(shop, "Q", at=now - timedelta(minutes=1))

    response = _get(shop, PATHS[1], anonymous_id="never-seen")

    assert _ids(response) == ["P", "Q"]


@pytest.mark.django_db
def test_pick_up_lists_unbought_products_most_recent_first(shop):
    now = timezone.now()
    person = PersonFactory(shop=shop, user_id="u-1")
    PersonIdentifierFactory(person=person, kind="user_id", value="u-1")
    _event(shop, "A", at=now - timedelta(hours=2), person=person)
    _event(shop, "B", "add_to_cart", at=now - timedelta(hours=1), person=person)
    _event(shop, "A", at=now - timedelta(minutes=30), person=person)
    _event(shop, "C", at=now - timedelta(minutes=20), person=person)
    _event(shop, "C", "purchase", at=now - timedelta(minutes=10), person=person)
    _event(shop, "D", at=now - timedelta(days=40), person=person)
    token = identity_token_compute(shop=shop, user_id="u-1")

    response = _get(shop, PATHS[2], headers={"X-Identity-Token": token}, user_id="u-1")

    assert _ids(response) == ["A", "B"]
    assert [p["reason"] for p in response.json()["products"]] == ["viewed", "carted"]


@pytest.mark.django_db
def test_pick_up_requires_an_identifier(shop):
    response = _get(shop, PATHS[2])

    assert response.status_code == 400
    assert response.json()["fields"] == {"anonymous_id": ["required"]}


@pytest.mark.django_db
def test_storefront_results_are_cached(shop, django_assert_num_queries):
    _event(shop, "A", "purchase", at=timezone.now() - timedelta(minutes=1))
    _get(shop, PATHS[0])
    _event(shop, "B", "purchase", at=timezone.now() - timedelta(minutes=1))

    with django_assert_num_queries(0):
        response = _get(shop, PATHS[0])

    assert _ids(response) == ["A"]


@pytest.mark.django_db
def test_affinity_rebuild_scores_session_co_occurrence(shop):
    person = PersonFactory(shop=shop)
    baskets = [["A", "B"], ["A", "B", "C", "A"], ["A"]]
    for i, basket in enumerate(baskets):
        start = NOW - timedelta(days=i + 1)
        session = Session.objects.create(shop=shop, person=person, started_at=start, ended_at=start)
        for product_id in basket:
            _event(shop, product_id, at=start, person=person, session=session)
    ProductAffinityFactory(shop=shop, product_id="old", other_product_id="gone")

    result = services.affinity_rebuild(shop_id=shop.pk, now=NOW)
    services.affinity_rebuild(shop_id=shop.pk, now=NOW)

    assert (result.sessions, result.products, result.pairs) == (3, 3, 6)
    rows = ProductAffinity.objects.filter(shop=shop).order_by("product_id", "other_product_id")
    assert [
        (r.product_id, r.other_product_id, round(r.score, 6), r.session_count) for r in rows
    ] == [
        ("A", "B", 0.816497, 2),
        ("A", "C", 0.57735, 1),
        ("B", "A", 0.816497, 2),
        ("B", "C", 0.707107, 1),
        ("C", "A", 0.57735, 1),
        ("C", "B", 0.707107, 1),
    ]


@pytest.mark.django_db
def test_storefront_endpoints_allow_cross_origin_calls(shop):
    response = APIClient().options(
        PATHS[1],
        headers={
            "Origin": "https://store.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-write-key, x-identity-token",
        },
    )

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    allowed = response["Access-Control-Allow-Headers"].split(", ")
    assert {"x-write-key", "x-identity-token"} <= set(allowed)


def test_affinity_rebuild_runs_daily_from_beat():
    scheduled = {e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()}

    assert "recommendations.tasks.affinity_rebuild_sweep_task" in scheduled
    assert (
        tasks.affinity_rebuild_sweep_task.name
        == "recommendations.tasks.affinity_rebuild_sweep_task"
    )
