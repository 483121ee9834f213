"""Detection settings through the API (token, shop-scoped, validated as one: nothing saved on a
400) and the admin; flipping the bot exclusion recomputes the tagged people's days."""

from datetime import UTC, datetime

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from analytics.models import BotTag, DetectionSettings, NetworkTag
from events.models import Session
from events.tests.factories import EventFactory, PersonFactory, ShopFactory

URL = "/analytics/detection_settings/"

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(shop, user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def test_the_defaults_then_a_partial_update(owner_client, shop):
    defaults = owner_client.get(f"{URL}?shop={shop.domain}").json()
    assert defaults == {
        "shop": shop.domain, "hourly_threshold": 4.0, "daily_threshold": 4.0, "min_history": 3,
        "high_value_order": 100.0, "order_threshold": 3.5, "holidays": [], "exclude_bots": True,
        "exclude_shared_networks": False, "updated_at": None,
    }  # fmt: skip

    response = owner_client.patch(
        f"{URL}?shop={shop.domain}",
        {"hourly_threshold": 5.5, "holidays": ["2026-12-25", "2026-12-24", "2026-12-25"],
         "high_value_order": None, "min_history": 4},
        format="json",
    )  # fmt: skip

    assert response.status_code == 200
    body = response.json()
    assert (body["hourly_threshold"], body["daily_threshold"], body["min_history"]) == (5.5, 4.0, 4)
    assert (body["holidays"], body["high_value_order"]) == (["2026-12-24", "2026-12-25"], None)
    row = DetectionSettings.objects.get(shop=shop)
    assert (row.hourly_threshold, row.high_value_order, row.holidays) == (
        5.5, None, ["2026-12-24", "2026-12-25"],
    )  # fmt: skip
    assert owner_client.get(URL).json() == body  # the member's only shop needs no ?shop=


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"hourly_threshold": -4}, {"hourly_threshold"}),
        ({"order_threshold": 0.5}, {"order_threshold"}),
        ({"daily_threshold": "4"}, {"daily_threshold"}),
        ({"high_value_order": -1}, {"high_value_order"}),
        ({"high_value_order": "lots"}, {"high_value_order"}),
        ({"min_history": 0}, {"min_history"}),
        ({"min_history": 2.5}, {"min_history"}),
        ({"holidays": ["2026-02-30"]}, {"holidays"}),
        ({"holidays": "2026-12-25"}, {"holidays"}),
        ({"exclude_bots": "no"}, {"exclude_bots"}),
        ({"exclude_shared_networks": 1}, {"exclude_shared_networks"}),
        ({"exclude_shared_networks": None, "exclude_bots": False}, {"exclude_shared_networks"}),
        ({"sensitivity": 3}, {"sensitivity"}),
        # One bad field spoils the valid one beside it: nothing is saved.
        ({"hourly_threshold": 6, "threshold": -1, "daily_threshold": -2},
         {"threshold", "daily_threshold"}),
    ],
)  # fmt: skip
def test_bad_settings_are_400_naming_each_field_and_nothing_is_saved(
    owner_client, shop, body, fields
):
    response = owner_client.patch(f"{URL}?shop={shop.domain}", body, format="json")

    assert response.status_code == 400
    envelope = response.json()
    assert (envelope["code"], envelope["detail"]) == ("invalid", "Invalid detection settings.")
    assert set(envelope["fields"]) == fields
    assert not DetectionSettings.objects.filter(shop=shop).exists()


def test_another_shop_is_404_and_anonymous_is_401(owner_client):
    stranger = ShopFactory()

    assert owner_client.get(f"{URL}?shop={stranger.domain}").status_code == 404
    assert (
        owner_client.patch(
            f"{URL}?shop={stranger.domain}", {"exclude_bots": False}, format="json"
        ).status_code
        == 404
    )
    assert APIClient().get(URL).status_code == 401
    assert not DetectionSettings.objects.exists()


def test_flipping_the_bot_exclusion_recomputes_the_tagged_days(
    owner_client, shop, django_capture_on_commit_callbacks
):
    person = PersonFactory(shop=shop)
    at = datetime(2026, 3, 4, 10, tzinfo=UTC)
    Session.objects.create(shop=shop, person=person, started_at=at, ended_at=at.replace(hour=11))
    EventFactory(shop=shop, person=person, occurred_at=at)
    BotTag.objects.create(
        shop=shop, person_id=person.pk, first_at=at, last_at=at, tagged_at=at, reasons=["x"]
    )

    with django_capture_on_commit_callbacks() as unchanged:
        owner_client.patch(f"{URL}?shop={shop.domain}", {"exclude_bots": True}, format="json")
    with django_capture_on_commit_callbacks() as flipped:
        owner_client.patch(f"{URL}?shop={shop.domain}", {"exclude_bots": False}, format="json")

    assert (len(unchanged), len(flipped)) == (0, 1)
    assert DetectionSettings.objects.get(shop=shop).exclude_bots is False


def test_flipping_the_shared_network_exclusion_recomputes_the_networks_people(
    owner_client, shop, django_capture_on_commit_callbacks, monkeypatch
):
    person, stranger = PersonFactory(shop=shop), PersonFactory(shop=shop)
    at = datetime(2026, 3, 4, 10, tzinfo=UTC)
    for someone in (person, stranger):
        Session.objects.create(shop=shop, person=someone, started_at=at, ended_at=at)
    NetworkTag.objects.create(
        shop=shop, network="203.0.113.0", person_ids=[person.pk], first_at=at, last_at=at,
        tagged_at=at,
    )  # fmt: skip
    scheduled = []
    monkeypatch.setattr(
        "analytics.tasks.rollups_days_recompute_task.delay",
        lambda shop_id, days: scheduled.append((shop_id, days)),
    )

    with django_capture_on_commit_callbacks(execute=True) as unchanged:
        owner_client.patch(
            f"{URL}?shop={shop.domain}", {"exclude_shared_networks": False}, format="json"
        )
    with django_capture_on_commit_callbacks(execute=True) as flipped:
        response = owner_client.patch(
            f"{URL}?shop={shop.domain}", {"exclude_shared_networks": True}, format="json"
        )

    assert (len(unchanged), len(flipped)) == (0, 1)
    assert scheduled == [(shop.pk, ["2026-03-04"])]
    assert response.json()["exclude_shared_networks"] is True
    row = DetectionSettings.objects.get(shop=shop)
    assert (row.exclude_shared_networks, row.exclude_bots) == (True, True)


def test_the_admin_saves_valid_settings_and_refuses_a_negative_threshold(admin_client, shop):
    form = {
        "shop": shop.pk, "hourly_threshold": "-1", "daily_threshold": "4", "min_history": "3",
        "order_threshold": "3.5", "high_value_order": "250", "holidays": "[]",
        "exclude_bots": "on",
    }  # fmt: skip
    refused = admin_client.post("/admin/analytics/detectionsettings/add/", form)
    assert refused.status_code == 200
    assert "Must be between 1 and 100" in refused.content.decode()
    assert not DetectionSettings.objects.exists()

    saved = admin_client.post(
        "/admin/analytics/detectionsettings/add/", {**form, "hourly_threshold": "4.5"}
    )
    assert saved.status_code == 302
    row = DetectionSettings.objects.get(shop=shop)
    assert (row.hourly_threshold, str(row.high_value_order), row.exclude_bots) == (
        4.5, "250.00", True,
    )  # fmt: skip
