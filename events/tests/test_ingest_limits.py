"""Issue #15: every bad input rejects only its own event, with a code, and the rejection is kept;
a "duplicate" is only ever a duplicate."""

import json
from datetime import UTC, datetime

import orjson
import pytest
from django.db import DataError

from events.models import Event, RejectedEvent
from events.services.ingest import events_insert, rejected_event_replay
from events.tests.factories import event_in

GOOD = {"event_id": "good", "type": "page_view", "anonymous_id": "a"}


def nested(depth: int) -> dict:
    """Properties `depth` levels deep, the properties object itself counting as one."""
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def stored_ids(shop) -> list[str]:
    return sorted(Event.objects.filter(shop=shop).values_list("event_id", flat=True))


def rejected(response) -> list[tuple[int, str]]:
    return [(r["index"], r["code"]) for r in response.json()["rejected"]]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/events/", "/v1/batch"])
def test_a_null_event_is_rejected_and_kept_beside_its_valid_neighbour(ingest_client, shop, path):
    neighbour = (
        GOOD if path == "/events/" else {"type": "page", "messageId": "good", "anonymousId": "a"}
    )

    response = ingest_client.post(path, {"batch": [None, neighbour]})

    assert response.status_code == (202 if path == "/events/" else 200)
    assert rejected(response) == [(0, "not_object")]
    assert stored_ids(shop) == ["good"]
    assert RejectedEvent.objects.get(shop=shop).payload == "null"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("event", "sent_at"),
    [
        ({"timestamp": "0001-01-01T00:00+01:00"}, None),
        ({"timestamp": "9999-12-31T23:59-01:00"}, None),
        ({"timestamp": "0001-01-01T00:00:00Z", "sent_at": "9999-12-31T23:59:59Z"}, None),
        ({"timestamp": "0001-01-01T00:00:00Z"}, "9999-12-31T23:59:59Z"),
        ({"timestamp": "0001-01-01T00:00:00Z"}, None),
        ({"timestamp": "1999-12-31T23:59:59Z"}, None),
        ({"timestamp": -62135596800}, None),
    ],
)
def test_timestamps_outside_the_accepted_range_reject_only_their_event(
    ingest_client, shop, event, sent_at
):
    bad = {"event_id": "bad", "type": "page_view", "anonymous_id": "a", **event}
    body: dict = {"batch": [bad, GOOD]}
    if sent_at:
        body["sent_at"] = sent_at

    response = ingest_client.post("/events/", body)

    assert response.status_code == 202
    assert rejected(response) == [(0, "invalid_timestamp")]
    assert stored_ids(shop) == ["good"]
    assert RejectedEvent.objects.get(shop=shop).code == "invalid_timestamp"


@pytest.mark.django_db
def test_a_year_one_timestamp_through_segment_track_is_rejected(ingest_client, shop):
    message = {"event": "x", "messageId": "p", "anonymousId": "a", "timestamp": "0001-01-01"}

    response = ingest_client.post("/v1/track", message)

    assert response.status_code == 200  # the Segment API answers 200, as Segment does
    assert rejected(response) == [(0, "invalid_timestamp")]
    assert stored_ids(shop) == []


@pytest.mark.django_db
@pytest.mark.parametrize("literal", [b"NaN", b"-Infinity", b"1e309", b'"\\ud83d"'])
def test_a_value_json_cannot_carry_rejects_only_its_event(ingest_client, shop, literal):
    body = b'{"batch": [{"event_id": "bad", "type": "page_view", "anonymous_id": "a", '
    body += b'"properties": {"x": [1, ' + literal + b"]}}, " + orjson.dumps(GOOD) + b"]}"

    response = ingest_client.post("/events/", body)

    assert response.status_code == 202
    assert rejected(response) == [(0, "invalid_json")]
    assert stored_ids(shop) == ["good"]
    kept = RejectedEvent.objects.get(shop=shop)
    assert kept.code == "invalid_json"
    assert kept.payload.startswith('{"event_id": "bad", ')


@pytest.mark.django_db
def test_a_single_segment_message_with_nan_is_rejected_with_a_code(ingest_client, shop):
    body = b'{"event": "x", "messageId": "m", "anonymousId": "a", "properties": {"v": NaN}}'

    response = ingest_client.post("/v1/track", body)

    assert response.status_code == 200  # the Segment API answers 200, as Segment does
    assert rejected(response) == [(0, "invalid_json")]


@pytest.mark.django_db
def test_nan_outside_the_events_still_rejects_the_body(ingest_client, shop):
    body = b'{"batch": [' + orjson.dumps(GOOD) + b'], "sent_at": NaN}'

    response = ingest_client.post("/events/", body)

    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


@pytest.mark.django_db
@pytest.mark.parametrize("depth", [32, 100, 254, 255, 300])
def test_properties_nested_too_deeply_are_rejected_not_counted_as_duplicates(
    ingest_client, shop, depth
):
    bad = {**GOOD, "event_id": "deep", "properties": nested(depth)}

    # The stdlib encoder: orjson stops at 255 levels.
    response = ingest_client.post("/events/", json.dumps({"batch": [bad, GOOD]}).encode())

    assert response.status_code == 202
    assert response.json()["duplicates"] == 0
    assert rejected(response) == [(0, "too_deep")]
    assert stored_ids(shop) == ["good"]
    assert RejectedEvent.objects.get(shop=shop).code == "too_deep"


@pytest.mark.django_db
def test_properties_at_the_depth_limit_are_stored(ingest_client, shop):
    response = ingest_client.post("/events/", {**GOOD, "properties": nested(31)})

    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert Event.objects.get(shop=shop).properties == nested(31)


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["properties", "traits"])
def test_segment_properties_or_traits_300_deep_are_rejected(ingest_client, shop, field):
    kind = "track" if field == "properties" else "identify"
    message = {"type": kind, "event": "x", "messageId": "m", "anonymousId": "a"}
    message[field] = nested(300)

    response = ingest_client.post("/v1/batch", json.dumps({"batch": [message]}).encode())

    assert response.status_code == 200  # the Segment API answers 200, as Segment does
    assert rejected(response) == [(0, "too_deep")]


@pytest.mark.django_db
def test_a_kept_rejection_that_json_cannot_store_replays_to_the_same_rejection(ingest_client, shop):
    ingest_client.post("/events/", {**GOOD, "properties": nested(40)})
    kept = RejectedEvent.objects.get(shop=shop)

    result = rejected_event_replay(rejected=kept, now=kept.received_at)

    assert [(r.index, r.code) for r in result.rejected] == [(0, "too_deep")]


@pytest.mark.django_db
def test_the_insert_raises_when_the_database_refuses_a_row_for_a_reason_other_than_a_duplicate(
    shop, mysql_only
):
    at = datetime(2026, 1, 5, tzinfo=UTC)
    deep = event_in("deep", at, properties=nested(40))  # past the validator, as a bug would

    with pytest.raises(DataError, match="deep"):
        events_insert(shop_id=shop.pk, events=[event_in("ok", at), deep], received_at=at)


@pytest.mark.django_db
def test_the_insert_still_counts_duplicates_as_duplicates(shop):
    at = datetime(2026, 1, 5, tzinfo=UTC)
    events_insert(shop_id=shop.pk, events=[event_in("a", at)], received_at=at)

    inserted = events_insert(
        shop_id=shop.pk,
        events=[event_in("a", at), event_in("b", at), event_in("b", at)],
        received_at=at,
    )

    assert inserted == 1
    assert stored_ids(shop) == ["a", "b"]


@pytest.mark.django_db
def test_an_event_too_deep_to_inspect_beside_a_nan_is_rejected_alone(ingest_client, shop):
    deep = b'{"event_id": "deep", "properties": {"x": ' + b"[" * 900 + b"]" * 900 + b"}}"
    body = b'{"batch": [' + deep + b", " + orjson.dumps(GOOD) + b', {"v": NaN}]}'

    response = ingest_client.post("/events/", body)

    assert response.status_code == 202
    assert rejected(response) == [(0, "invalid_json"), (2, "invalid_json")]
    assert stored_ids(shop) == ["good"]
