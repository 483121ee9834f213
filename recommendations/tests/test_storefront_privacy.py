"""Who a storefront endpoint may answer for: the browser's own anonymous id, or a user id the
shop's server vouched for with an identity token; the write key never travels in a URL."""

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from events.tests.factories import EventFactory, PersonFactory, PersonIdentifierFactory

PATHS = ["/api/crowd_favorites/", "/api/featured_collection/", "/api/pick_up_where_you_left_off/"]
PICK_UP = PATHS[2]


def _customer(shop, *, user_id="u-1", anonymous_id="anon-1"):
    person = PersonFactory(shop=shop, user_id=user_id)
    PersonIdentifierFactory(person=person, kind="user_id", value=user_id)
    PersonIdentifierFactory(person=person, kind="anonymous_id", value=anonymous_id)
    EventFactory(
        shop=shop,
        person=person,
        type="product_view",
        product_id="A",
        occurred_at=timezone.now() - timedelta(minutes=5),
    )
    return person


def _token(shop, user_id: str) -> str:
    # What the shop's server computes (docs/recommendations.md): hex HMAC-SHA256 of the user id
    # under the shop's identity secret.
    return hmac.new(shop.identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def _get(shop, path, params, **headers):
    return APIClient().get(path, params, headers={"X-Write-Key": shop.write_key, **headers})


@pytest.mark.django_db
def test_pick_up_refuses_a_user_id_without_an_identity_token(shop):
    _customer(shop)

    response = _get(shop, PICK_UP, {"user_id": "u-1"})

    assert response.status_code == 403
    assert response.json() == {
        "code": "permission_denied",
        "detail": "A user_id needs the X-Identity-Token the shop's server issued for it.",
        "fields": {"user_id": ["unverified"]},
    }


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS[1:])
def test_personal_endpoints_refuse_a_token_issued_for_another_user(shop, path):
    _customer(shop)
    token = _token(shop, "u-2")

    response = _get(shop, path, {"user_id": "u-1"}, **{"X-Identity-Token": token})

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


@pytest.mark.django_db
def test_pick_up_refuses_a_token_signed_with_another_shops_secret(shop, other_shop):
    _customer(shop)
    token = _token(other_shop, "u-1")

    response = _get(shop, PICK_UP, {"user_id": "u-1"}, **{"X-Identity-Token": token})

    assert response.status_code == 403


@pytest.mark.django_db
def test_pick_up_answers_a_user_id_with_its_identity_token(shop):
    _customer(shop)
    token = _token(shop, "u-1")

    response = _get(shop, PICK_UP, {"user_id": "u-1"}, **{"X-Identity-Token": token})

    assert response.status_code == 200
    assert [p["product_id"] for p in response.json()["products"]] == ["A"]


@pytest.mark.django_db
def test_pick_up_answers_the_browsers_own_anonymous_id(shop):
    _customer(shop, anonymous_id="anon-7")

    response = _get(shop, PICK_UP, {"anonymous_id": "anon-7"})

    assert [p["product_id"] for p in response.json()["products"]] == ["A"]


@pytest.mark.django_db
def test_shops_get_distinct_identity_secrets(shop, other_shop):
    assert len(shop.identity_secret) == 64
    assert shop.identity_secret != other_shop.identity_secret


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_storefront_endpoints_ignore_a_write_key_in_the_query_string(shop, path):
    _customer(shop)

    response = APIClient().get(path, {"write_key": shop.write_key, "anonymous_id": "anon-1"})

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
def test_storefront_endpoints_take_the_write_key_from_basic_auth(shop):
    _customer(shop)
    basic = base64.b64encode(f"{shop.write_key}:".encode()).decode()

    response = APIClient().get(
        PICK_UP, {"anonymous_id": "anon-1"}, headers={"Authorization": f"Basic {basic}"}
    )

    assert response.status_code == 200
    assert [p["product_id"] for p in response.json()["products"]] == ["A"]
