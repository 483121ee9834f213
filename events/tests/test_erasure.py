import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from clickserver.errors import ApplicationError
from events.models import (
    ErasureRequest,
    Event,
    Order,
    Person,
    PersonIdentifier,
    RejectedEvent,
    Session,
    ShopMembership,
)
from events.services import erasure
from events.services.ingest import events_ingest, events_insert
from events.tests.factories import UserFactory, event_in

T0 = datetime(2026, 1, 5, 23, 30, tzinfo=UTC)
NOW = datetime(2026, 2, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def two_shoppers(shop, process_all):
    """Ann browses, signs in as u-ann and buys across midnight UTC; Bob only browses."""
    events_insert(
        shop_id=shop.pk,
        events=[
            event_in("a1", at(0), anonymous_id="aid-ann"),
            event_in("a2", at(5), anonymous_id="aid-ann", user_id="u-ann", type="identify"),
            event_in(
                "a3",
                at(40),
                anonymous_id="aid-ann",
                user_id="u-ann",
                type="purchase",
                order_id="o-ann",
                revenue=Decimal("30.00"),
            ),
            event_in("b1", at(1), anonymous_id="aid-bob"),
            event_in("b2", at(2), anonymous_id="aid-bob", type="product_view", product_id="p1"),
        ],
        received_at=at(41),
    )
    process_all(shop)


def rows_of(shop) -> tuple:
    return (
        sorted(Event.objects.filter(shop=shop).values_list("event_id", flat=True)),
        Session.objects.filter(shop=shop).count(),
        sorted(Person.objects.filter(shop=shop).values_list("user_id", flat=True)),
        sorted(PersonIdentifier.objects.filter(shop=shop).values_list("value", flat=True)),
        list(Order.objects.filter(shop=shop).values_list("order_id", flat=True)),
    )


@pytest.mark.django_db
def test_persons_erase_removes_the_person_and_keeps_the_others(shop, two_shoppers):
    request = erasure.persons_erase(shop=shop, user_id="u-ann", now=NOW)

    assert rows_of(shop) == (["b1", "b2"], 1, [""], ["aid-bob"], [])
    assert request.kind == "user_id"
    assert request.requested_at == NOW
    assert request.completed_at is None
    # The purchase lies after midnight UTC: both UTC days hold the person.
    assert request.days == ["2026-01-05", "2026-01-06"]
    assert request.counts == {
        "events": 3,
        "rejected_events": 0,
        "refunds": 0,
        "orders": 1,
        "checkouts": 0,
        "sessions": 2,
        "identifiers": 2,
        "persons": 1,
        "segment_memberships": 0,
        "conversion_scores": 0,
        "webhook_deliveries": 0,
        "data_exports": 0,
    }


@pytest.mark.django_db
def test_persons_erase_finds_the_person_by_any_of_their_identifiers(shop, two_shoppers):
    erasure.persons_erase(shop=shop, anonymous_id=" aid-ann ", now=NOW)

    assert rows_of(shop) == (["b1", "b2"], 1, [""], ["aid-bob"], [])


@pytest.mark.django_db
def test_persons_erase_by_email_matches_the_stored_hash(shop, process_all):
    events_ingest(
        shop=shop,
        events=[
            {"event_id": "i1", "type": "identify", "anonymous_id": "aid-cy",
             "properties": {"traits": {"email": "cy@example.com"}}},
            {"event_id": "p1", "type": "page_view", "anonymous_id": "aid-cy"},
            {"event_id": "p2", "type": "page_view", "anonymous_id": "aid-dee"},
        ],
        received_at=T0,
    )  # fmt: skip
    process_all(shop)

    request = erasure.persons_erase(shop=shop, email="  CY@Example.com ", now=NOW)

    assert sorted(Event.objects.filter(shop=shop).values_list("event_id", flat=True)) == ["p2"]
    assert (request.kind, request.counts["events"], request.counts["persons"]) == ("email", 2, 1)


@pytest.mark.django_db
def test_persons_erase_removes_unprocessed_events_and_rejected_payloads(shop, two_shoppers):
    events_insert(
        shop_id=shop.pk, events=[event_in("a4", at(60), anonymous_id="aid-ann")], received_at=T0
    )
    RejectedEvent.objects.create(
        shop=shop,
        payload={"type": "track", "context": {"traits": {"userId": "u-ann"}}},
        code="invalid_type",
        detail="bad",
        received_at=T0,
    )
    # Only identity keys are compared: the same text elsewhere in a payload names nobody.
    kept = RejectedEvent.objects.create(
        shop=shop,
        payload={"anonymous_id": "aid-bob", "properties": {"note": "u-ann"}},
        code="invalid_type",
        detail="",
        received_at=T0,
    )

    request = erasure.persons_erase(shop=shop, user_id="u-ann", now=NOW)

    assert sorted(Event.objects.filter(shop=shop).values_list("event_id", flat=True)) == [
        "b1",
        "b2",
    ]
    assert list(RejectedEvent.objects.filter(shop=shop)) == [kept]
    assert (request.counts["events"], request.counts["rejected_events"]) == (4, 1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "given",
    [{}, {"user_id": "u-ann", "email": "ann@example.com"}, {"user_id": "null"}, {"email": "ann"}],
)
def test_persons_erase_needs_exactly_one_usable_identifier(shop, two_shoppers, given):
    with pytest.raises(ApplicationError):
        erasure.persons_erase(shop=shop, now=NOW, **given)

    assert ErasureRequest.objects.count() == 0
    assert Event.objects.filter(shop=shop).count() == 5


@pytest.mark.django_db
def test_erasures_complete_runs_the_follow_ups_once_per_request(shop, two_shoppers, settings):
    settings.ERASURE_FOLLOW_UPS = []
    request = erasure.persons_erase(shop=shop, user_id="u-ann", now=NOW)

    first = erasure.erasures_complete(shop_id=shop.pk, now=NOW + timedelta(minutes=1))
    second = erasure.erasures_complete(shop_id=shop.pk, now=NOW + timedelta(minutes=2))

    request.refresh_from_db()
    assert (first.requests, first.days, second.requests) == (1, 2, 0)
    assert request.completed_at == NOW + timedelta(minutes=1)


@pytest.mark.django_db
def test_erasure_api_erases_for_an_owner_and_lists_without_personal_data(
    shop, two_shoppers, api_client, celery_eager, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            f"/events/erasures/?shop={shop.domain}", {"user_id": "u-ann"}, format="json"
        )
    listed = api_client.get(f"/events/erasures/?shop={shop.domain}")

    assert response.status_code == 202
    body = response.json()
    assert (body["kind"], body["day_count"], body["counts"]["events"]) == ("user_id", 2, 3)
    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [body["id"]]
    # The recompute ran on commit (eagerly here): the request is complete.
    assert listed.json()["results"][0]["completed_at"] is not None
    assert b"ann" not in listed.content
    assert rows_of(shop)[0] == ["b1", "b2"]


@pytest.mark.django_db
def test_erasure_api_refuses_analysts_and_other_shops(shop, other_shop, two_shoppers):
    analyst = UserFactory()
    ShopMembership.objects.create(shop=shop, user=analyst, role="analyst")
    client = APIClient()
    client.force_authenticate(user=analyst)
    outsider = APIClient()
    outsider.force_authenticate(user=UserFactory())

    refused = client.post(f"/events/erasures/?shop={shop.domain}", {"user_id": "u-ann"})
    hidden = outsider.post(f"/events/erasures/?shop={shop.domain}", {"user_id": "u-ann"})
    anonymous = APIClient().get(f"/events/erasures/?shop={shop.domain}")

    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    assert (hidden.status_code, hidden.json()["code"]) == (404, "not_found")
    assert anonymous.status_code == 401
    assert ErasureRequest.objects.count() == 0
    assert Event.objects.filter(shop=shop).count() == 5


@pytest.mark.django_db
def test_erasure_api_rejects_two_identifiers_in_the_envelope(shop, api_client):
    response = api_client.post(
        f"/events/erasures/?shop={shop.domain}",
        {"user_id": "u-ann", "anonymous_id": "aid-ann"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": "Give exactly one of user_id, anonymous_id or email.",
        "fields": {"user_id": ["Give exactly one."], "anonymous_id": ["Give exactly one."]},
    }
    assert ErasureRequest.objects.count() == 0


@pytest.mark.django_db
def test_erase_person_command_erases_and_completes(shop, two_shoppers, settings):
    settings.ERASURE_FOLLOW_UPS = []
    out = io.StringIO()

    call_command("erase_person", shop=shop.domain, anonymous_id="aid-ann", stdout=out,
                 stderr=io.StringIO())  # fmt: skip

    request = ErasureRequest.objects.get()
    assert (request.kind, request.completed_at is not None) == ("anonymous_id", True)
    assert f'"erasure":{request.pk}' in out.getvalue()
    assert "aid-ann" not in out.getvalue()
    assert rows_of(shop)[0] == ["b1", "b2"]


@pytest.mark.django_db
def test_erase_person_command_rejects_an_unknown_shop():
    with pytest.raises(CommandError, match="No shop"):
        call_command("erase_person", shop="nope.example.com", user_id="u", stdout=io.StringIO())


@pytest.mark.django_db
def test_admin_person_delete_goes_through_the_erasure(admin_client, shop, two_shoppers):
    ann = Person.objects.get(shop=shop, user_id="u-ann")

    confirm = admin_client.get(f"/admin/events/person/{ann.pk}/delete/")
    response = admin_client.post(f"/admin/events/person/{ann.pk}/delete/", {"post": "yes"})

    # The confirmation asks, rather than refusing for the sessions the erasure removes.
    assert b"Are you sure" in confirm.content
    assert response.status_code == 302
    assert rows_of(shop) == (["b1", "b2"], 1, [""], ["aid-bob"], [])
    assert ErasureRequest.objects.get().kind == "person"


@pytest.mark.django_db
def test_admin_cannot_delete_raw_events(admin_client, shop, two_shoppers):
    event = Event.objects.get(shop=shop, event_id="b1")

    response = admin_client.post(f"/admin/events/event/{event.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()


@pytest.mark.django_db
def test_persons_erase_keeps_another_users_events_from_a_shared_browser(
    shop, two_shoppers, process_all
):
    events_insert(
        shop_id=shop.pk,
        events=[
            event_in("s1", at(90), anonymous_id="aid-ann", user_id="u-bob", type="identify"),
            event_in("s2", at(95), anonymous_id="aid-ann", user_id="u-bob"),
        ],
        received_at=at(96),
    )
    process_all(shop)
    events_insert(
        shop_id=shop.pk,
        events=[event_in("s3", at(97), anonymous_id="aid-ann", user_id="u-bob")],
        received_at=at(98),
    )

    erasure.persons_erase(shop=shop, user_id="u-ann", now=NOW)

    assert sorted(Event.objects.filter(shop=shop).values_list("event_id", flat=True)) == [
        "b1",
        "b2",
        "s1",
        "s2",
        "s3",
    ]
    assert Person.objects.filter(shop=shop, user_id="u-bob").exists()


@pytest.mark.django_db
def test_erasure_api_is_not_open_to_storefront_origins(client):
    origin = {"HTTP_ORIGIN": "https://store.example", "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST"}

    erasures = client.options("/events/erasures/", **origin)
    ingest = client.options("/events/", **origin)

    assert "access-control-allow-origin" not in erasures.headers
    assert ingest.headers["access-control-allow-origin"] == "*"
