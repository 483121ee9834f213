"""Identity stitching merges two persons: their campaign decisions, live scores and segment
memberships move to the survivor (settings.PERSON_MERGE_HOOKS) instead of going with the deleted
person, so a notified session is never decided, and notified, a second time."""

from datetime import UTC, datetime, timedelta

import pytest

from events.models import Person, Session
from events.services.ingest import events_insert
from events.tests.factories import event_in
from notifications.campaigns import decisions
from notifications.models import CampaignDecision, ConversionScore
from notifications.tests.test_campaigns import campaign_running
from segments.models import Segment, SegmentMembership

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def minutes(value: float) -> datetime:
    return T0 + timedelta(minutes=value)


def insert(shop, *events) -> None:
    events_insert(shop_id=shop.pk, events=list(events), received_at=T0)


def decide(campaign, session: Session) -> CampaignDecision:
    return CampaignDecision.objects.create(
        campaign=campaign,
        shop=campaign.shop,
        session=session,
        person=session.person,
        anonymous_id=f"anon-{session.pk}",
        unit_id=f"anon:anon-{session.pk}",
        phase=1,
        arm="nudge",
        reason="test",
        title="Hi",
        body="",
        cta_url="/cart",
        created_at=T0,
    )


@pytest.mark.django_db
def test_a_merge_keeps_decisions_scores_and_memberships_on_the_survivor(shop, process_all):
    insert(shop, event_in("a", minutes(0), anonymous_id="phone"))
    insert(shop, event_in("b", minutes(1), anonymous_id="laptop", user_id="ann"))
    process_all(shop)
    phone = Session.objects.get(shop=shop, person__user_id="")
    laptop = Session.objects.get(shop=shop, person__user_id="ann")
    campaign = campaign_running(shop)
    decided = [decide(campaign, phone).pk, decide(campaign, laptop).pk]
    for session in (phone, laptop):
        ConversionScore.objects.create(
            shop=shop, session=session, person=session.person, score=0.4, scored_at=T0
        )
    vip = Segment.objects.create(shop=shop, name="VIP")
    fans = Segment.objects.create(shop=shop, name="Fans")
    SegmentMembership.objects.create(segment=vip, person=phone.person, since=minutes(-60))
    SegmentMembership.objects.create(segment=vip, person=laptop.person, since=minutes(-10))
    SegmentMembership.objects.create(segment=fans, person=phone.person, since=minutes(-30))

    # The phone signs in as ann: one person now.
    insert(shop, event_in("c", minutes(2), anonymous_id="phone", user_id="ann"))
    process_all(shop)

    [survivor] = Person.objects.filter(shop=shop)
    assert sorted(
        CampaignDecision.objects.filter(person=survivor).values_list("pk", flat=True)
    ) == (sorted(decided))
    # The two visits are one now: one decision moved with it, the other (same campaign) is kept
    # without a session; one live score stays (the next batch rescores the visit).
    [visit] = Session.objects.filter(shop=shop)
    assert sorted(CampaignDecision.objects.values_list("session_id", flat=True), key=str) == sorted(
        [visit.pk, None], key=str
    )
    assert list(ConversionScore.objects.values_list("session_id", "person_id")) == [
        (visit.pk, survivor.pk)
    ]
    assert dict(
        SegmentMembership.objects.filter(person=survivor).values_list("segment_id", "since")
    ) == {vip.pk: minutes(-60), fans.pk: minutes(-30)}


@pytest.mark.django_db
def test_a_decided_session_is_not_decided_again_after_its_person_is_merged(shop, process_all):
    insert(shop, event_in("a", minutes(0), anonymous_id="phone"))
    insert(shop, event_in("b", minutes(1), anonymous_id="laptop", user_id="ann"))
    process_all(shop)
    phone = Session.objects.get(shop=shop, person__user_id="")
    campaign = campaign_running(shop)
    decide(campaign, phone)
    insert(shop, event_in("c", minutes(2), anonymous_id="phone", user_id="ann"))
    process_all(shop)
    # Whatever the merge did to the scores, the merged session is in the band now.
    phone.refresh_from_db()
    ConversionScore.objects.update_or_create(
        session=phone,
        defaults={"shop": shop, "person": phone.person, "score": 0.4, "scored_at": T0},
    )

    decisions.campaign_decisions_run(shop_id=shop.pk, now=minutes(3))

    assert CampaignDecision.objects.filter(campaign=campaign).count() == 1


@pytest.mark.django_db
def test_a_late_event_that_joins_two_visits_keeps_both_visits_decisions(shop, process_all):
    insert(
        shop,
        event_in("a", minutes(0), anonymous_id="phone"),
        event_in("b", minutes(50), anonymous_id="phone"),
    )
    process_all(shop)
    first, second = Session.objects.filter(shop=shop).order_by("started_at")
    nudge = campaign_running(shop)
    other = campaign_running(shop, key="other")
    kept = [decide(nudge, first).pk, decide(other, second).pk]

    # An event that arrives late, 25 minutes in: one visit of 50 minutes now.
    insert(shop, event_in("late", minutes(25), anonymous_id="phone"))
    process_all(shop)

    [visit] = Session.objects.filter(shop=shop)
    assert dict(CampaignDecision.objects.values_list("pk", "session_id")) == dict.fromkeys(
        kept, visit.pk
    )
