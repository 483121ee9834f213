"""Each request limit, hit: read APIs, CSV exports, bad tokens, storefront endpoints, logins."""

import base64

import pytest
from django.test import Client, override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from events.tests.factories import ShopFactory, UserFactory

pytestmark = pytest.mark.django_db

KPIS = "/analytics/kpis/?shop={}"
RATE_LIMITED = "rate_limited"


def _get_many(client, path: str, count: int, **extra) -> list[int]:
    return [client.get(path, **extra).status_code for _ in range(count)]


@override_settings(API_RATE_LIMIT_REQUESTS=2)
def test_read_api_is_limited_per_user(shop, api_client):
    other_user = UserFactory()
    other_shop = ShopFactory(owner=other_user)
    other = APIClient()
    other.force_authenticate(user=other_user)

    statuses = _get_many(api_client, KPIS.format(shop.domain), 2)
    refused = api_client.get(KPIS.format(shop.domain))
    others = other.get(KPIS.format(other_shop.domain))

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["code"] == RATE_LIMITED
    assert refused.json()["fields"] == {}
    assert others.status_code == 200


@override_settings(API_EXPORT_RATE_LIMIT_REQUESTS=1)
def test_csv_exports_have_a_tighter_limit(shop, api_client):
    first = api_client.get(KPIS.format(shop.domain) + "&format=csv")

    second = api_client.get(KPIS.format(shop.domain) + "&format=csv")
    as_json = api_client.get(KPIS.format(shop.domain))

    assert first.status_code == 200
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) >= 1
    assert as_json.status_code == 200


@override_settings(API_TOKEN_FAILURE_LIMIT=2)
def test_bad_tokens_lock_out_the_client_ip_even_for_a_good_token(shop, user):
    good = Token.objects.create(user=user).key
    client = APIClient(REMOTE_ADDR="198.51.100.7")
    elsewhere = APIClient(REMOTE_ADDR="198.51.100.8")
    path = KPIS.format(shop.domain)

    failures = _get_many(client, path, 2, HTTP_AUTHORIZATION="Token wrong")
    locked = client.get(path, HTTP_AUTHORIZATION=f"Token {good}")
    other_ip = elsewhere.get(path, HTTP_AUTHORIZATION=f"Token {good}")

    assert failures == [401, 401]
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) >= 1
    assert locked.json()["code"] == RATE_LIMITED
    assert other_ip.status_code == 200


@override_settings(STOREFRONT_RATE_LIMIT_REQUESTS=2)
def test_storefront_endpoints_are_limited_per_write_key_and_ip(shop, other_shop):
    path = "/api/crowd_favorites/"
    visitor = APIClient(REMOTE_ADDR="203.0.113.5")
    neighbour = APIClient(REMOTE_ADDR="203.0.113.6")

    statuses = _get_many(visitor, path, 2, HTTP_X_WRITE_KEY=shop.write_key)
    refused = visitor.get(path, HTTP_X_WRITE_KEY=shop.write_key)
    other_ip = neighbour.get(path, HTTP_X_WRITE_KEY=shop.write_key)
    other_key = visitor.get(path, HTTP_X_WRITE_KEY=other_shop.write_key)

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["code"] == RATE_LIMITED
    assert (other_ip.status_code, other_key.status_code) == (200, 200)


@override_settings(STOREFRONT_RATE_LIMIT_REQUESTS=2)
def test_storefront_limit_reads_the_key_as_the_shop_check_does_never_from_the_query(shop):
    path = "/api/crowd_favorites/"
    visitor = APIClient(REMOTE_ADDR="203.0.113.7")
    basic = base64.b64encode(f"{shop.write_key}:".encode()).decode()

    statuses = _get_many(visitor, path, 2, HTTP_X_WRITE_KEY=shop.write_key)
    same_key_by_basic_auth = visitor.get(path, HTTP_AUTHORIZATION=f"Basic {basic}")
    in_the_query = visitor.get(path, {"write_key": shop.write_key})

    assert statuses == [200, 200]
    assert same_key_by_basic_auth.status_code == 429
    assert in_the_query.status_code == 401


def _login_client(settings) -> Client:
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    return Client(REMOTE_ADDR="192.0.2.10")


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
@override_settings(LOGIN_FAILURE_LIMIT=2)
def test_failed_logins_are_throttled_even_for_the_right_password(settings, path):
    staff = UserFactory(username="ada", is_staff=True)
    staff.set_password("right-password")
    staff.save()
    client = _login_client(settings)

    wrong = [
        client.post(path, {"username": "ada", "password": "wrong"}).status_code for _ in range(2)
    ]
    locked = client.post(path, {"username": "ada", "password": "right-password"})

    assert wrong == [200, 200]
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) >= 1
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


@override_settings(LOGIN_FAILURE_LIMIT=2)
def test_a_successful_login_resets_the_failure_count(settings):
    user = UserFactory(username="grace")
    user.set_password("right-password")
    user.save()
    client = _login_client(settings)
    path = "/accounts/login/"

    client.post(path, {"username": "grace", "password": "wrong"})
    success = client.post(path, {"username": "grace", "password": "right-password"})
    client.logout()
    after = [
        client.post(path, {"username": "grace", "password": "wrong"}).status_code for _ in range(2)
    ]

    assert success.status_code == 302
    assert after == [200, 200]


@override_settings(LOGIN_FAILURE_LIMIT=100, LOGIN_FAILURE_IP_LIMIT=3)
def test_failed_logins_across_usernames_are_throttled_per_ip(settings):
    client = _login_client(settings)

    statuses = [
        client.post("/accounts/login/", {"username": f"u{i}", "password": "x"}).status_code
        for i in range(4)
    ]

    assert statuses == [200, 200, 200, 429]
