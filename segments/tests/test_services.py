from datetime import UTC, datetime, timedelta

import pytest

from clickserver.errors import ApplicationError
from events.tests.factories import EventFactory, PersonFactory
from segments.models import Segment, SegmentMembership
from segments.services import segments as services
from segments.tests.factories import OrderFactory, SegmentFactory, SessionFactory

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def _members(shop, key: str) -> set[int]:
    return set(
        SegmentMembership.objects.filter(segment__shop=shop, segment__key=key).values_list(
            "person_id", flat=True
        )
    )


def _event(person, event_type, days_ago):
    EventFactory(shop=person.shop, person=person, type=event_type, occurred_at=_ago(days_ago))


@pytest.mark.django_db
def test_segments_refresh_assigns_each_active_person_one_intent(shop):
    buyer, carter, checkout, viewer, returning, browser, gone = PersonFactory.create_batch(
        7, shop=shop
    )
    _event(buyer, "add_to_cart", 2)
    _event(buyer, "purchase", 2)
    _event(carter, "add_to_cart", 29)
    _event(checkout, "checkout_started", 1)
    for _ in range(3):
        _event(viewer, "product_view", 5)
    _event(returning, "page_view", 3)
    SessionFactory(person=returning, started_at=_ago(3))
    SessionFactory(person=returning, started_at=_ago(10))
    _event(browser, "product_view", 1)
    _event(browser, "product_view", 1)
    _event(gone, "add_to_cart", 31)

    services.segments_refresh(shop_id=shop.pk, now=NOW)

    assert _members(shop, "intent_converted") == {buyer.pk}
    assert _members(shop, "intent_high") == {carter.pk, checkout.pk}
    assert _members(shop, "intent_medium") == {viewer.pk, returning.pk}
    assert _members(shop, "intent_low") == {browser.pk}


@pytest.mark.django_db
def test_segments_refresh_bands_customers_by_net_revenue(shop):
    people = PersonFactory.create_batch(20, shop=shop)
    for i, person in enumerate(people, start=1):
        OrderFactory(person=person, total=10 * i, placed_at=_ago(5))
    # Cancelled orders do not count, and a full refund leaves no revenue at all.
    OrderFactory(person=people[0], total=5000, is_cancelled=True, placed_at=_ago(5))
    refunded = PersonFactory(shop=shop)
    OrderFactory(person=refunded, total=500, refunded_amount=500, placed_at=_ago(5))
    OrderFactory(person=people[19], total=50, placed_at=NOW)  # placed at `now`: not yet counted

    services.segments_refresh(shop_id=shop.pk, now=NOW)

    ids = [p.pk for p in people]
    assert _members(shop, "value_vip") == {ids[19]}
    assert _members(shop, "value_high") == set(ids[14:19])
    assert _members(shop, "value_medium") == set(ids[7:14])
    assert _members(shop, "value_low") == set(ids[0:7])


@pytest.mark.django_db
def test_segments_refresh_flags_churn_by_each_customers_purchase_rhythm(shop):
    quick, active, slow, lapsed, browser = PersonFactory.create_batch(5, shop=shop)
    # quick: gap 2 days -> N = 30; last seen 40 days ago.
    OrderFactory(person=quick, placed_at=_ago(59))
    OrderFactory(person=quick, placed_at=_ago(57))
    SessionFactory(person=quick, started_at=_ago(40))
    OrderFactory(person=active, placed_at=_ago(59))
    SessionFactory(person=active, started_at=_ago(14))
    # slow: gap 90 days -> N = 180; last seen 90 days ago.
    OrderFactory(person=slow, placed_at=_ago(270))
    OrderFactory(person=slow, placed_at=_ago(180))
    SessionFactory(person=slow, started_at=_ago(90))
    # lapsed: gap 30 days -> N = 60; last seen 90 days ago.
    OrderFactory(person=lapsed, placed_at=_ago(270))
    OrderFactory(person=lapsed, placed_at=_ago(240))
    SessionFactory(person=lapsed, started_at=_ago(90))
    SessionFactory(person=browser, started_at=_ago(200))

    services.segments_refresh(shop_id=shop.pk, now=NOW)

    assert _members(shop, "churn_risk") == {quick.pk, lapsed.pk}


@pytest.mark.django_db
def test_segments_refresh_is_idempotent_and_keeps_since(shop):
    stays, leaves = PersonFactory.create_batch(2, shop=shop)
    _event(stays, "purchase", 1)
    _event(leaves, "purchase", 20)
    segment = SegmentFactory(shop=shop, rules={"all": [{"event": "purchase", "within_days": 30}]})
    services.segments_refresh(shop_id=shop.pk, now=NOW)
    first = list(SegmentMembership.objects.order_by("id").values_list("id", "person_id", "since"))

    again = services.segments_refresh(shop_id=shop.pk, now=NOW)
    second = list(SegmentMembership.objects.order_by("id").values_list("id", "person_id", "since"))
    later = services.segments_refresh(shop_id=shop.pk, now=NOW + timedelta(days=15))

    assert again.added == 0
    assert again.removed == 0
    assert again.segments == 12  # 11 built-in (2 predicted) and the rule segment
    assert later.removed == 2  # `leaves` left the rule segment and the converted segment
    assert second == first
    segment.refresh_from_db()
    assert segment.member_count == 1
    assert segment.refreshed_at == NOW + timedelta(days=15)
    assert SegmentMembership.objects.get(segment=segment).since == NOW
    assert Segment.objects.filter(shop=shop, kind=Segment.Kind.BUILTIN).count() == 11


@pytest.mark.django_db
def test_segment_create_rejects_invalid_rules_and_writes_nothing(shop):
    with pytest.raises(ApplicationError) as error:
        services.segment_create(shop=shop, name="Bad", rules={"all": [{"event": "x"}]}, now=NOW)

    assert error.value.fields == {"rules": ["rules.all[0]: an event condition needs 'within_days'"]}
    assert Segment.objects.count() == 0
