"""The admin is an interface: it writes through the services, or not at all."""

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.authtoken.models import Token

from events.models import RejectedEvent, Session, Shop, ShopMembership
from events.services.ingest import events_insert
from events.tests.factories import event_in
from events.tests.test_shop_roles import change_form

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 1, 6, tzinfo=UTC)


@pytest.mark.django_db
def test_adding_a_shop_in_the_admin_creates_it_as_shop_create_does(admin_client, admin_user):
    response = admin_client.post(
        "/admin/events/shop/add/",
        {"domain": "new.example.com", "name": "", "timezone": "Europe/Paris", "currency": "eur"},
    )

    assert response.status_code == 302
    shop = Shop.objects.get(domain="new.example.com")
    assert (shop.name, shop.timezone, shop.currency) == ("new.example.com", "Europe/Paris", "EUR")
    assert len(shop.write_key) > 20
    assert list(ShopMembership.objects.filter(shop=shop).values_list("user", "role")) == [
        (admin_user.pk, ShopMembership.Role.OWNER)
    ]
    assert Token.objects.filter(user=admin_user).exists()


@pytest.mark.django_db
def test_the_admin_refuses_an_unknown_time_zone_and_writes_nothing(admin_client):
    response = admin_client.post(
        "/admin/events/shop/add/",
        {"domain": "new.example.com", "name": "", "timezone": "Mars/Olympus", "currency": "EUR"},
    )

    assert response.status_code == 200
    assert "Unknown time zone" in response.content.decode()
    assert not Shop.objects.filter(domain="new.example.com").exists()


@pytest.mark.django_db
def test_changing_the_session_timeout_in_the_admin_resessionises_the_shop(
    admin_client, shop, process_all, celery_eager, django_capture_on_commit_callbacks
):
    events_insert(
        shop_id=shop.pk,
        events=[event_in("a", T0), event_in("b", T0 + timedelta(minutes=20))],
        received_at=RECEIVED,
    )
    process_all(shop)
    assert Session.objects.filter(shop=shop).count() == 1

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            f"/admin/events/shop/{shop.pk}/change/", change_form(shop, session_timeout_minutes=10)
        )

    assert response.status_code == 302
    assert len(callbacks) == 1
    shop.refresh_from_db()
    assert shop.session_timeout_minutes == 10
    assert sorted(Session.objects.filter(shop=shop).values_list("started_at", "event_count")) == [
        (T0, 1),
        (T0 + timedelta(minutes=20), 1),
    ]


@pytest.mark.django_db
def test_changing_another_setting_in_the_admin_sends_no_rebuild(
    admin_client, shop, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(
            f"/admin/events/shop/{shop.pk}/change/", change_form(shop, name="Renamed")
        )

    assert response.status_code == 302
    assert callbacks == []
    assert Shop.objects.get(pk=shop.pk).name == "Renamed"


@pytest.mark.django_db
def test_a_rejected_event_is_view_only_in_the_admin(admin_client, shop):
    rejected = RejectedEvent.objects.create(
        shop=shop, payload={"type": "x"}, code="invalid", detail="bad", received_at=RECEIVED
    )
    url = f"/admin/events/rejectedevent/{rejected.pk}/change/"

    page = admin_client.get(url)
    response = admin_client.post(url, {"payload": '{"type": "page_view"}'})

    assert page.status_code == 200
    assert 'name="payload"' not in page.content.decode()
    assert response.status_code == 403
    rejected.refresh_from_db()
    assert rejected.payload == {"type": "x"}
