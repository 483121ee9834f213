import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from events.tests.factories import EventFactory, PersonFactory
from segments import tasks
from segments.models import Segment, SegmentMembership
from segments.tests.factories import OrderFactory, SegmentFactory, SessionFactory

T = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _identified(shop, user_id: str, *, last_seen: datetime, orders=(), sessions=0):
    person = PersonFactory(shop=shop, user_id=user_id, first_seen_at=T, last_seen_at=last_seen)
    for total, refunded, cancelled in orders:
        OrderFactory(person=person, total=total, refunded_amount=refunded, is_cancelled=cancelled)
    for i in range(sessions):
        SessionFactory(person=person, started_at=T + timedelta(hours=i))
    return person


@pytest.mark.django_db
def test_segment_endpoints_require_authentication(shop):
    client = APIClient()

    response = client.get("/segments/", {"shop": shop.domain})

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/segments/", "/segments/identified-users-list", "/segments/identified-users-sessions"]
)
def test_segment_endpoints_hide_other_shops(api_client, shop, other_shop, path):
    response = api_client.get(path, {"shop": other_shop.domain})

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "No such shop.", "fields": {}}


@pytest.mark.django_db
def test_segment_members_of_another_shops_segment_is_404(api_client, shop, other_shop):
    segment = SegmentFactory(shop=other_shop)

    response = api_client.get(f"/segments/{segment.pk}/members/", {"shop": shop.domain})

    assert response.status_code == 404


@pytest.mark.django_db
def test_segment_create_materialises_members(api_client, shop):
    buyer = PersonFactory(shop=shop)
    EventFactory(shop=shop, person=buyer, type="purchase", occurred_at=datetime.now(UTC))
    rules = {"all": [{"event": "purchase", "within_days": 7}]}

    response = api_client.post(
        f"/segments/?shop={shop.domain}", {"name": "Buyers", "rules": rules}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["kind"], body["rules"], body["member_count"]) == (
        "Buyers",
        "rule",
        rules,
        1,
    )
    assert list(SegmentMembership.objects.values_list("person_id", flat=True)) == [buyer.pk]


@pytest.mark.django_db
def test_segment_create_rejects_bad_rules_in_the_envelope(api_client, shop):
    response = api_client.post(
        f"/segments/?shop={shop.domain}",
        {"name": "Bad", "rules": {"all": [{"event": "purchase", "within_days": -1}]}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": "Invalid segment rules.",
        "fields": {"rules": ["rules.all[0].within_days: must be an integer from 1 to 730"]},
    }
    assert Segment.objects.count() == 0


@pytest.mark.django_db
def test_segment_create_rejects_a_duplicate_name(api_client, shop):
    SegmentFactory(shop=shop, name="Buyers")

    response = api_client.post(
        f"/segments/?shop={shop.domain}",
        {"name": "Buyers", "rules": {"any": [{"event": "purchase", "within_days": 7}]}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "duplicate"
    assert Segment.objects.count() == 1


@pytest.mark.django_db
def test_segment_members_are_paginated_in_constant_queries(
    api_client, shop, django_assert_num_queries
):
    segment = SegmentFactory(shop=shop)
    people = PersonFactory.create_batch(3, shop=shop)
    for person in people:
        SegmentMembership.objects.create(segment=segment, person=person, since=T)

    with django_assert_num_queries(4):  # shop, segment, count, page
        response = api_client.get(
            f"/segments/{segment.pk}/members/", {"shop": shop.domain, "page_size": 2}
        )

    body = response.json()
    assert body["count"] == 3
    assert [row["person_id"] for row in body["results"]] == [people[0].pk, people[1].pk]
    assert body["results"][0]["since"] == "2026-01-05T12:00:00Z"


@pytest.mark.django_db
def test_identified_users_list_counts_sessions_orders_and_net_revenue(
    api_client, shop, django_assert_num_queries
):
    alice = _identified(
        shop,
        "alice",
        last_seen=T + timedelta(days=2),
        orders=[(100, 30, False), (50, 0, False), (999, 0, True)],
        sessions=2,
    )
    bob = _identified(shop, "bob", last_seen=T + timedelta(days=1))
    PersonFactory(shop=shop)  # anonymous: not listed

    with django_assert_num_queries(3):  # shop, count, page
        response = api_client.get("/segments/identified-users-list", {"shop": shop.domain})

    assert response.status_code == 200
    assert response.json()["results"] == [
        {
            "person_id": alice.pk,
            "user_id": "alice",
            "first_seen_at": "2026-01-05T12:00:00Z",
            "last_seen_at": "2026-01-07T12:00:00Z",
            "session_count": 2,
            "order_count": 2,
            "revenue": "120.00",
        },
        {
            "person_id": bob.pk,
            "user_id": "bob",
            "first_seen_at": "2026-01-05T12:00:00Z",
            "last_seen_at": "2026-01-06T12:00:00Z",
            "session_count": 0,
            "order_count": 0,
            "revenue": "0.00",
        },
    ]


@pytest.mark.django_db
def test_identified_users_list_downloads_as_csv(api_client, shop):
    carol = _identified(shop, "carol", last_seen=T, orders=[(10, 0, False)], sessions=1)

    response = api_client.get(
        "/segments/identified-users-list", {"shop": shop.domain, "format": "csv"}
    )

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="identified_users.csv"'
    assert response.content.decode().splitlines() == [
        "person_id,user_id,first_seen_at,last_seen_at,session_count,order_count,revenue",
        f"{carol.pk},carol,2026-01-05 12:00:00+00:00,2026-01-05 12:00:00+00:00,1,1,10.00",
    ]


@pytest.mark.django_db
def test_identified_users_sessions_filters_the_date_range(
    api_client, shop, django_assert_num_queries
):
    dave = PersonFactory(shop=shop, user_id="dave")
    inside = SessionFactory(person=dave, started_at=datetime(2026, 1, 10, 23, 0, tzinfo=UTC))
    SessionFactory(person=dave, started_at=datetime(2026, 1, 11, 0, 0, tzinfo=UTC))
    SessionFactory(person=PersonFactory(shop=shop), started_at=datetime(2026, 1, 10, tzinfo=UTC))

    with django_assert_num_queries(3):
        response = api_client.get(
            "/segments/identified-users-sessions",
            {"shop": shop.domain, "start": "2026-01-01", "end": "2026-01-10"},
        )

    body = response.json()
    assert body["count"] == 1
    assert body["results"][0]["session_id"] == inside.pk
    assert body["results"][0]["user_id"] == "dave"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"end": "0001-01-01"}, "end", "must be between 2000-01-01 and {latest}"),
        (
            {"start": "9999-12-01", "end": "9999-12-31"},
            "start",
            "must be between 2000-01-01 and {latest}",
        ),
        ({"start": "2026-02-01", "end": "2026-01-01"}, "start", "must not be after end"),
        ({"start": "2026-13-01"}, "start", "expected YYYY-MM-DD"),
    ],
)
def test_identified_users_sessions_rejects_a_bad_range(api_client, shop, query, field, message):
    message = message.format(latest=(datetime.now(UTC).date() + timedelta(days=366)).isoformat())

    response = api_client.get("/segments/identified-users-sessions", {"shop": shop.domain, **query})

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": f"{field}: {message}",
        "fields": {field: [message]},
    }


@pytest.mark.django_db
def test_segment_list_shows_the_shops_segments_in_two_queries(
    api_client, shop, other_shop, django_assert_num_queries
):
    SegmentFactory(shop=shop, name="B rule")
    SegmentFactory(shop=shop, name="A rule")
    SegmentFactory(shop=other_shop, name="Elsewhere")

    with django_assert_num_queries(2):  # shop, segments
        response = api_client.get("/segments/", {"shop": shop.domain})

    assert [s["name"] for s in response.json()] == ["A rule", "B rule"]


def test_segments_refresh_runs_hourly_from_beat():
    entries = {e["task"]: e for e in settings.CELERY_BEAT_SCHEDULE.values()}

    assert "segments.tasks.segments_refresh_sweep_task" in entries
    assert tasks.segments_refresh_sweep_task.name == "segments.tasks.segments_refresh_sweep_task"
    assert tasks.segments_refresh_task.name == "segments.tasks.segments_refresh_task"


@pytest.mark.django_db
def test_segment_create_treats_a_lookup_shaped_property_as_a_key(api_client, shop):
    member = PersonFactory(shop=shop)
    EventFactory(
        shop=shop, person=member, properties={"pk__in": "x"}, occurred_at=datetime.now(UTC)
    )
    rules = {"all": [{"property": "pk__in", "equals": "x"}]}

    response = api_client.post(
        f"/segments/?shop={shop.domain}", {"name": "Keys", "rules": rules}, format="json"
    )

    assert response.status_code == 201
    assert list(SegmentMembership.objects.values_list("person_id", flat=True)) == [member.pk]


@pytest.mark.django_db
@pytest.mark.parametrize("page_size", ["0", "1001", "", "ten"])
def test_a_page_size_outside_1_to_1000_is_rejected(api_client, shop, page_size):
    response = api_client.get(
        "/segments/identified-users-list", {"shop": shop.domain, "page_size": page_size}
    )

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": "page_size: must be an integer from 1 to 1000",
        "fields": {"page_size": ["must be an integer from 1 to 1000"]},
    }


@pytest.mark.django_db
def test_an_api_path_that_matches_no_route_is_a_404_envelope(api_client):
    response = api_client.get("/segments/null,null/members/")

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "Not found.", "fields": {}}


def _csv_rows(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


@pytest.mark.django_db
@pytest.mark.parametrize("page_size", ["null", "0", "1001", ""])
def test_a_csv_export_rejects_the_page_size_a_json_page_rejects(api_client, shop, page_size):
    response = api_client.get(
        "/segments/identified-users-list",
        {"shop": shop.domain, "format": "csv", "page": "2", "page_size": page_size},
    )

    assert response.status_code == 400
    assert [(row["code"], row["detail"]) for row in _csv_rows(response)] == [
        ("invalid", "page_size: must be an integer from 1 to 1000")
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["false", "0", "-1", "1.0"])
def test_a_csv_export_rejects_the_page_a_json_page_rejects(api_client, shop, page):
    csv_answer = api_client.get(
        "/segments/identified-users-list", {"shop": shop.domain, "format": "csv", "page": page}
    )
    json_answer = api_client.get(
        "/segments/identified-users-list", {"shop": shop.domain, "page": page}
    )

    assert json_answer.status_code == 404
    assert json_answer.json() == {"code": "not_found", "detail": "Invalid page.", "fields": {}}
    assert csv_answer.status_code == 404
    assert [(row["code"], row["detail"]) for row in _csv_rows(csv_answer)] == [
        ("not_found", "Invalid page.")
    ]


@pytest.mark.django_db
def test_a_csv_export_is_the_whole_table_whatever_page_it_is_given(api_client, shop):
    _identified(shop, "alice", last_seen=T)
    _identified(shop, "bob", last_seen=T + timedelta(days=1))

    response = api_client.get(
        "/segments/identified-users-list",
        {"shop": shop.domain, "format": "csv", "page": "17524", "page_size": "1"},
    )

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="identified_users.csv"'
    assert sorted(row["user_id"] for row in _csv_rows(response)) == ["alice", "bob"]
