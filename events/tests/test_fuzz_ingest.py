"""Property tests: any JSON value in any field is an accepted or a rejected event, never an error.

Hypothesis draws JSON values (nested lists and objects of nulls, booleans, 64-bit integers,
finite floats and strings) for every field our format and the Segment format read, and for
arbitrary extra keys. The validator and the Segment mapping either produce an event or raise
`EventInvalid` with a code; through HTTP, every batch is a 202 (`/v1/batch`: 200, as Segment
answers) whose counts add up to the batch,
each rejection carrying a code and stored as a RejectedEvent.
"""

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import Event, RejectedEvent
from events.segment import segment_to_event
from events.validation import EventIn, EventInvalid, event_validate

pytestmark = pytest.mark.fuzz

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
FIELDS = (
    "event_id",
    "type",
    "anonymous_id",
    "user_id",
    "timestamp",
    "url",
    "referrer",
    "title",
    "product",
    "order",
    "properties",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "user_agent",
    "ip",
    "country",
)
SEGMENT_FIELDS = (
    "type",
    "event",
    "name",
    "messageId",
    "anonymousId",
    "userId",
    "previousId",
    "timestamp",
    "sentAt",
    "properties",
    "traits",
    "context",
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Shapes a client might plausibly send, with any field anything.
PRODUCT_LIKE = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(("id", "name", "category", "price", "quantity", "revenue"), JSON),
)


def _event(fields: tuple[str, ...]) -> st.SearchStrategy:
    return st.one_of(
        JSON,
        st.fixed_dictionaries(
            {},
            optional=dict.fromkeys(fields, JSON | PRODUCT_LIKE),
        ),
        st.fixed_dictionaries(
            {"event_id": st.text(min_size=1, max_size=20), "type": st.text(max_size=20)},
            optional={name: JSON for name in fields if name not in ("event_id", "type")},
        ),
    )


EVENTS = _event(FIELDS)
SEGMENT_MESSAGES = _event(SEGMENT_FIELDS)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True)
HTTP_FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _validated(raw, *, sent_at=None) -> EventIn | EventInvalid:
    try:
        return event_validate(raw, received_at=NOW, sent_at=sent_at)
    except EventInvalid as error:
        return error


@FUZZ
@given(raw=EVENTS, sent_at=st.none() | st.datetimes(timezones=st.just(UTC)))
def test_validator_accepts_or_rejects_any_json(raw, sent_at, fuzz_cases):
    fuzz_cases["test_validator_accepts_or_rejects_any_json"] += 1
    outcome = _validated(raw, sent_at=sent_at)

    if isinstance(outcome, EventInvalid):
        assert outcome.code
    else:
        assert outcome.event_id
        assert outcome.occurred_at.tzinfo is not None


@FUZZ
@given(message=SEGMENT_MESSAGES)
def test_segment_mapping_accepts_or_rejects_any_json(message, fuzz_cases):
    fuzz_cases["test_segment_mapping_accepts_or_rejects_any_json"] += 1
    outcome = _validated(segment_to_event(message))

    assert isinstance(outcome, EventIn | EventInvalid)


def _assert_every_event_accounted(
    response, batch: list, before: int, shop, *, status: int = 202
) -> None:
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert body["accepted"] + body["duplicates"] + len(body["rejected"]) == len(batch)
    assert all(r["code"] for r in body["rejected"])
    assert sorted(r["index"] for r in body["rejected"]) == sorted(
        {r["index"] for r in body["rejected"]}
    )
    assert RejectedEvent.objects.filter(shop=shop).count() - before == len(body["rejected"])


@pytest.mark.django_db
@HTTP_FUZZ
@given(batch=st.lists(EVENTS, min_size=1, max_size=5))
def test_events_endpoint_answers_202_for_any_json_events(ingest_client, shop, batch, fuzz_cases):
    fuzz_cases["test_events_endpoint_answers_202_for_any_json_events"] += 1
    before = RejectedEvent.objects.filter(shop=shop).count()

    response = ingest_client.post("/events/", {"batch": batch})

    _assert_every_event_accounted(response, batch, before, shop)


@pytest.mark.django_db
@HTTP_FUZZ
@given(batch=st.lists(SEGMENT_MESSAGES, min_size=1, max_size=5))
def test_segment_batch_answers_200_for_any_json_messages(ingest_client, shop, batch, fuzz_cases):
    fuzz_cases["test_segment_batch_answers_200_for_any_json_messages"] += 1
    before = RejectedEvent.objects.filter(shop=shop).count()

    response = ingest_client.post("/v1/batch", {"batch": batch})

    # The Segment API answers 200 {"success": true}, as Segment does (its SDKs accept only 200).
    _assert_every_event_accounted(response, batch, before, shop, status=200)


@pytest.mark.django_db
def test_a_rejected_neighbour_leaves_the_valid_event_stored(ingest_client, shop):
    batch = [
        {"event_id": "fine", "type": "page_view", "anonymous_id": "a"},
        {"event_id": ["no"], "type": {}, "anonymous_id": "a"},
    ]

    response = ingest_client.post("/events/", {"batch": batch})

    assert response.status_code == 202
    assert orjson.loads(response.content)["accepted"] == 1
    assert list(Event.objects.filter(shop=shop).values_list("event_id", flat=True)) == ["fine"]
