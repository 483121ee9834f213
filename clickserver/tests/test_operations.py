from io import StringIO

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token

from events.models import Event, RejectedEvent, Shop, ShopMembership
from events.services.ingest import events_ingest


@pytest.mark.django_db
def test_liveness_and_readiness(client, shop):
    events_ingest(
        shop=shop, events=[{"type": "page_view", "anonymous_id": "a"}], received_at=timezone.now()
    )

    live = client.get("/health/")
    ready = client.get("/health/ready/")

    assert live.json() == {"status": "ok"}
    body = ready.json()
    assert ready.status_code == 200
    assert body["checks"] == {"database": "ok", "cache": "ok", "broker": "ok"}
    assert body["backlog"]["events"] == 1
    assert body["backlog"]["lag_seconds"] >= 0


@pytest.mark.django_db
def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert b"/events/" in schema.content
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()
    assert b"cdn" not in docs.content.lower()


@pytest.mark.django_db
def test_create_shop_prints_ids_and_keys():
    out = StringIO()

    call_command(
        "create_shop",
        "--domain",
        "new.example",
        "--owner",
        "alice",
        "--webhook-secret",
        "s3cret",
        "--timezone",
        "Europe/Paris",
        "--currency",
        "eur",
        stdout=out,
    )

    printed = orjson.loads(out.getvalue())
    shop = Shop.objects.get(domain="new.example")
    assert printed == {
        "shop_id": shop.pk,
        "write_key": shop.write_key,
        "api_token": Token.objects.get(user__username="alice").key,
    }
    assert (shop.webhook_secret, shop.timezone, shop.currency) == ("s3cret", "Europe/Paris", "EUR")
    assert ShopMembership.objects.get(shop=shop).role == "owner"


@pytest.mark.django_db
def test_create_shop_refuses_a_taken_domain(shop):
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_shop", "--domain", shop.domain, "--owner", "bob")
    with pytest.raises(CommandError, match="Unknown time zone"):
        call_command(
            "create_shop", "--domain", "x.example", "--owner", "bob", "--timezone", "Mars/Base"
        )
    assert not Shop.objects.filter(domain="x.example").exists()


@pytest.mark.django_db
def test_admin_replays_a_rejected_event_and_rotates_a_write_key(admin_client, shop):
    events_ingest(shop=shop, events=[{"type": "page_view"}], received_at=timezone.now())
    rejected = RejectedEvent.objects.get()
    rejected.payload = {"type": "page_view", "anonymous_id": "fixed"}
    rejected.save()
    old_key = shop.write_key

    admin_client.post(
        "/admin/events/rejectedevent/", {"action": "replay", "_selected_action": [rejected.pk]}
    )
    admin_client.post(
        "/admin/events/shop/", {"action": "rotate_write_key", "_selected_action": [shop.pk]}
    )

    rejected.refresh_from_db()
    assert rejected.replayed_at is not None
    assert Event.objects.get(shop=shop).anonymous_id == "fixed"
    shop.refresh_from_db()
    assert shop.write_key != old_key


@pytest.mark.django_db
def test_admin_pages_render(admin_client, shop):
    for url in [
        "/admin/events/shop/",
        f"/admin/events/shop/{shop.pk}/change/",
        "/admin/events/event/",
        "/admin/events/rejectedevent/",
        "/admin/events/person/",
        "/admin/events/session/",
    ]:
        assert admin_client.get(url).status_code == 200, url
