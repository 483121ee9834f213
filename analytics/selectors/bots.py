"""Which people the analytics leave out as bots (and, when the shop chooses, as the people of a
shared network), and how much that is (issue 19: excluded from the analytics when the shop
chooses, with a count of what was excluded)."""

from datetime import date
from zoneinfo import ZoneInfo

from django.db.models import Q, Sum

from analytics.models import BotTag, NetworkTag
from analytics.periods import local_date
from events.models import Session


def bot_people_excluded(*, shop_id: int) -> frozenset[int]:
    """The person ids tagged as bots when the shop excludes them (the default), and the people
    seen on a shared network when the shop excludes those too (not the default), else none.

    Two queries (each joined with the settings row: a shop without one excludes bots and keeps
    shared networks), read once per rollup batch: the rollup services skip these people's
    sessions and events.
    """
    bots = set(
        BotTag.objects.filter(shop_id=shop_id)
        .filter(
            Q(shop__detection_settings__isnull=True)
            | Q(shop__detection_settings__exclude_bots=True)
        )
        .values_list("person_id", flat=True)
    )
    for person_ids in NetworkTag.objects.filter(
        shop_id=shop_id, shop__detection_settings__exclude_shared_networks=True
    ).values_list("person_ids", flat=True):
        bots.update(int(person_id) for person_id in person_ids)
    return frozenset(bots)


def network_people_get(*, shop_id: int) -> list[int]:
    """Everyone seen on one of the shop's shared networks (whatever the shop chose)."""
    people: set[int] = set()
    for person_ids in NetworkTag.objects.filter(shop_id=shop_id).values_list(
        "person_ids", flat=True
    ):
        people.update(int(person_id) for person_id in person_ids)
    return sorted(people)


def bot_days_get(*, shop_id: int, person_ids: list[int], tz: ZoneInfo) -> list[date]:
    """The shop-local days these people's sessions touch (start to end): the rollup days that
    change when they are tagged, or when the shop turns the exclusion on or off."""
    days: set[date] = set()
    spans = Session.objects.filter(shop_id=shop_id, person_id__in=person_ids).values_list(
        "started_at", "ended_at"
    )
    for started_at, ended_at in spans:
        first, last = local_date(started_at, tz), local_date(ended_at or started_at, tz)
        while first <= last:
            days.add(first)
            first = date.fromordinal(first.toordinal() + 1)
    return sorted(days)


def bots_excluded_summary(*, shop_id: int, exclude_bots: bool) -> dict[str, int | bool]:
    """What the bot detector tagged: people, their sessions (every session of a tagged person,
    counted from the sessions table) and the events seen when tagging; `excluded_from_analytics`
    says whether the rollups leave them out."""
    tags = BotTag.objects.filter(shop_id=shop_id)
    totals = tags.aggregate(events=Sum("event_count"))
    people = list(tags.values_list("person_id", flat=True))
    sessions = (
        Session.objects.filter(shop_id=shop_id, person_id__in=people).count() if people else 0
    )
    return {
        "excluded_from_analytics": exclude_bots,
        "people": len(people),
        "sessions": sessions,
        "events": totals["events"] or 0,
    }


def shared_networks_summary(*, shop_id: int, exclude: bool) -> dict[str, int | bool]:
    """What the detector found on shared networks: the networks, the people seen on them,
    their sessions (every session of those people, counted from the sessions table, as the
    rollups leave them out whole) and the events seen when they were found;
    `excluded_from_analytics` says whether the rollups leave those people out."""
    tags = NetworkTag.objects.filter(shop_id=shop_id)
    totals = tags.aggregate(events=Sum("event_count"))
    people = network_people_get(shop_id=shop_id)
    sessions = (
        Session.objects.filter(shop_id=shop_id, person_id__in=people).count() if people else 0
    )
    return {
        "excluded_from_analytics": exclude,
        "networks": tags.count(),
        "people": len(people),
        "sessions": sessions,
        "events": totals["events"] or 0,
    }
