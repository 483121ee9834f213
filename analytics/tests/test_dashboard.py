"""Dashboard views without a browser: login, shop access, the period and the demo endpoints."""

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from analytics.dashboard import PAGES
from events.models import Event
from events.tests.factories import ShopFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_for(settings):
    # The test client speaks plain HTTP: production's secure-only cookies would not come back.
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False

    def make(user) -> Client:
        user.set_password("pw-for-tests")
        user.save()
        client = Client(enforce_csrf_checks=True)
        assert client.login(username=user.username, password="pw-for-tests")
        return client

    return make


def test_dashboard_needs_a_login():
    response = Client().get("/traffic/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/traffic/"


def test_shop_switcher_lists_only_the_users_shops(user, shop, other_shop, client_for):
    response = client_for(user).get("/")

    assert response.status_code == 200
    assert [s.domain for s in response.context["shops"]] == [shop.domain]
    assert other_shop.domain not in response.content.decode()


def test_another_shop_is_not_found(user, shop, other_shop, client_for):
    response = client_for(user).get(f"/products/?shop={other_shop.domain}")

    assert response.status_code == 404


def test_the_default_period_is_the_last_30_days(user, shop, client_for):
    response = client_for(user).get(f"/?shop={shop.domain}")

    assert (response.context["end"] - response.context["start"]).days == 29


def test_install_page_shows_the_snippet_tag(user, shop, client_for):
    response = client_for(user).get(f"/install/?shop={shop.domain}")

    assert f"/snippet/{shop.write_key}.js" in response.content.decode()


def test_demo_traffic_needs_staff(user, shop, client_for):
    client = client_for(user)
    client.get(f"/install/?shop={shop.domain}")

    response = client.post(
        "/demo/generate-traffic/",
        {"shop": shop.domain},
        headers={"X-CSRFToken": client.cookies["csrftoken"].value},
    )

    assert response.status_code == 403
    assert Event.objects.count() == 0


def test_demo_traffic_needs_the_csrf_token(client_for):
    staff = UserFactory(is_staff=True)
    shop = ShopFactory(owner=staff)

    response = client_for(staff).post("/demo/generate-traffic/", {"shop": shop.domain})

    assert response.status_code == 403
    assert Event.objects.count() == 0


def test_demo_traffic_ingests_simulated_visits(client_for):
    staff = UserFactory(is_staff=True)
    shop = ShopFactory(owner=staff)
    client = client_for(staff)
    client.get(f"/install/?shop={shop.domain}")

    response = client.post(
        "/demo/generate-traffic/",
        {"shop": shop.domain},
        headers={"X-CSRFToken": client.cookies["csrftoken"].value},
    )

    body = response.json()
    assert response.status_code == 200
    assert body["kind"] == "traffic"
    assert body["rejected"] == 0
    assert body["accepted"] == Event.objects.filter(shop=shop).count() > 0


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        *[(page.path, "end=0001-01-01", "end") for page in PAGES],
        ("/", "start=9999-12-01&end=9999-12-31", "start"),
    ],
)
def test_every_page_rejects_an_unusable_period(user, shop, client_for, path, query, field):
    latest = (datetime.now(UTC).date() + timedelta(days=366)).isoformat()
    message = f"must be between 2000-01-01 and {latest}"

    response = client_for(user).get(f"{path}?shop={shop.domain}&{query}")

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": f"{field}: {message}",
        "fields": {field: [message]},
    }
