"""Segments in the admin go through the services: invalid rules are a form error and nothing is
saved; valid ones are saved with their members materialised, as the API does."""

import json

import pytest
from django.utils import timezone

from events.tests.factories import EventFactory, PersonFactory
from segments import builtin
from segments.models import Segment, SegmentMembership
from segments.tests.factories import SegmentFactory

ADD = "/admin/segments/segment/add/"
PURCHASED = {"all": [{"event": "purchase", "min_count": 1, "within_days": 30}]}
INVALID = {"all": [{"event": "purchase", "min_count": -1}]}

pytestmark = pytest.mark.django_db


def _change(segment) -> str:
    return f"/admin/segments/segment/{segment.pk}/change/"


def _buyer(shop):
    person = PersonFactory(shop=shop)
    EventFactory(shop=shop, person=person, type="purchase", occurred_at=timezone.now())
    return person


def test_invalid_rules_in_the_admin_are_a_form_error_and_nothing_is_saved(admin_client, shop):
    response = admin_client.post(
        ADD, {"shop": shop.pk, "name": "Bad", "rules": json.dumps(INVALID)}
    )

    assert response.status_code == 200
    assert "rules" in response.context["adminform"].form.errors
    assert not Segment.objects.filter(name="Bad").exists()


def test_a_built_in_name_is_a_form_error(admin_client, shop):
    name = next(iter(builtin.NAMES.values()))

    response = admin_client.post(
        ADD, {"shop": shop.pk, "name": name, "rules": json.dumps(PURCHASED)}
    )

    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors
    assert not Segment.objects.filter(shop=shop, name=name).exists()


def test_valid_rules_in_the_admin_are_saved_through_the_service(admin_client, shop):
    buyer = _buyer(shop)

    response = admin_client.post(
        ADD, {"shop": shop.pk, "name": "Buyers", "rules": json.dumps(PURCHASED)}
    )

    segment = Segment.objects.get(shop=shop, name="Buyers")
    assert response.status_code == 302
    assert (segment.kind, segment.rules) == (Segment.Kind.RULE, PURCHASED)
    # Materialised at once, as segment_create does for the API.
    assert segment.refreshed_at is not None
    assert segment.member_count == 1
    assert SegmentMembership.objects.filter(segment=segment, person=buyer).exists()


def test_editing_rules_in_the_admin_validates_and_rematerialises(admin_client, shop):
    buyer = _buyer(shop)
    segment = SegmentFactory(shop=shop, name="Viewers", rules={"all": [{"event": "page_view"}]})

    refused = admin_client.post(_change(segment), {"name": "Viewers", "rules": json.dumps(INVALID)})
    segment.refresh_from_db()
    rules_after_refusal = segment.rules
    accepted = admin_client.post(
        _change(segment), {"name": "Buyers", "rules": json.dumps(PURCHASED)}
    )
    segment.refresh_from_db()

    assert refused.status_code == 200
    assert "rules" in refused.context["adminform"].form.errors
    assert rules_after_refusal == {"all": [{"event": "page_view"}]}
    assert accepted.status_code == 302
    assert (segment.name, segment.rules, segment.member_count) == ("Buyers", PURCHASED, 1)
    assert SegmentMembership.objects.filter(segment=segment, person=buyer).exists()


def test_built_in_segments_are_read_only_in_the_admin(admin_client, shop):
    key = next(iter(builtin.NAMES))
    segment = SegmentFactory(
        shop=shop, name=builtin.NAMES[key], kind=Segment.Kind.BUILTIN, key=key, rules={}
    )

    response = admin_client.post(_change(segment), {"name": "Renamed", "rules": "{}"})
    segment.refresh_from_db()

    assert response.status_code == 403
    assert segment.name == builtin.NAMES[key]
