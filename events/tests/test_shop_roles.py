"""Shop roles in the admin: owners manage a shop, analysts only look at it."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from events.models import Shop, ShopMembership
from events.tests.factories import ShopFactory, UserFactory

SHOP_PERMISSIONS = ["view_shop", "change_shop", "delete_shop", "change_shopmembership"]


def staff_client(shop, role: str) -> Client:
    """A staff user holding every Django permission on shops: only the shop role differs."""
    user = UserFactory(is_staff=True)
    user.save()  # the factory sets the password after its save; the session checks its hash
    user.user_permissions.set(Permission.objects.filter(codename__in=SHOP_PERMISSIONS))
    ShopMembership.objects.create(shop=shop, user=user, role=role)
    client = Client()
    client.force_login(user)
    return client


def change_form(shop, **changes) -> dict:
    data = {
        "domain": shop.domain,
        "name": shop.name,
        "timezone": shop.timezone,
        "currency": shop.currency,
        "webhook_secret": shop.webhook_secret,
        "session_timeout_minutes": shop.session_timeout_minutes,
        "consent_mode": shop.consent_mode,
        "is_active": "on",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    return {**data, **changes}


@pytest.mark.django_db
def test_an_analyst_cannot_rotate_the_write_key(shop):
    client = staff_client(shop, "analyst")
    key = shop.write_key

    response = client.post(
        "/admin/events/shop/", {"action": "rotate_write_key", "_selected_action": [shop.pk]}
    )

    assert response.status_code == 403
    assert Shop.objects.get(pk=shop.pk).write_key == key


@pytest.mark.django_db
def test_an_analyst_cannot_change_the_shops_settings(shop):
    client = staff_client(shop, "analyst")

    response = client.post(
        f"/admin/events/shop/{shop.pk}/change/", change_form(shop, timezone="Europe/Paris")
    )

    assert response.status_code == 403
    assert Shop.objects.get(pk=shop.pk).timezone == "UTC"


@pytest.mark.django_db
def test_an_analyst_sees_the_shop_without_its_secrets(shop):
    client = staff_client(shop, "analyst")

    response = client.get(f"/admin/events/shop/{shop.pk}/change/")

    assert response.status_code == 200
    body = response.content.decode()
    assert shop.domain in body
    assert shop.webhook_secret not in body
    assert shop.identity_secret not in body


@pytest.mark.django_db
def test_an_owner_changes_settings_and_rotates_the_keys(shop):
    client = staff_client(shop, "owner")
    key, secret = shop.write_key, shop.identity_secret

    page = client.get(f"/admin/events/shop/{shop.pk}/change/")
    changed = client.post(
        f"/admin/events/shop/{shop.pk}/change/", change_form(shop, timezone="Europe/Paris")
    )
    for action in ("rotate_write_key", "rotate_identity_secret"):
        client.post("/admin/events/shop/", {"action": action, "_selected_action": [shop.pk]})

    assert shop.identity_secret in page.content.decode()
    assert changed.status_code == 302
    shop.refresh_from_db()
    assert shop.timezone == "Europe/Paris"
    assert shop.write_key != key
    assert shop.identity_secret != secret


@pytest.mark.django_db
def test_staff_see_only_the_shops_they_belong_to(shop):
    client = staff_client(shop, "owner")
    stranger = ShopFactory(domain="stranger.example.com")

    listing = client.get("/admin/events/shop/")
    rotate = client.post(
        "/admin/events/shop/", {"action": "rotate_write_key", "_selected_action": [stranger.pk]}
    )

    assert [s.domain for s in listing.context["cl"].result_list] == [shop.domain]
    assert rotate.status_code == 302  # nothing selected that this user may see: no action
    assert Shop.objects.get(pk=stranger.pk).write_key == stranger.write_key
