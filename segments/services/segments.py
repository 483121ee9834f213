"""Every write of the segments app: rule segments and the materialised memberships."""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, Max

from clickserver.errors import ApplicationError
from events.models import Event, Order, Person, Session, Shop
from segments import builtin
from segments.models import CustomerPrediction, Segment, SegmentMembership
from segments.rules import RuleError, rules_parse, rules_to_q
from segments.selectors.segments import value_bands_get

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
INTENT_TYPES = {
    "purchase": "purchases",
    "add_to_cart": "carts_or_checkouts",
    "checkout_started": "carts_or_checkouts",
    "product_view": "product_views",
}


@dataclass(frozen=True, slots=True)
class RefreshResult:
    shop_id: int
    segments: int
    added: int
    removed: int


def _intent_members(*, shop_id: int, now: datetime) -> dict[str, set[int]]:
    since = now - timedelta(days=builtin.INTENT_WINDOW_DAYS)
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = (
        Event.objects.filter(
            shop_id=shop_id, person__isnull=False, occurred_at__gte=since, occurred_at__lt=now
        )
        .values_list("person_id", "type")
        .annotate(n=Count("id"))
        .order_by()
    )
    for person_id, event_type, n in rows:
        counts[person_id][INTENT_TYPES.get(event_type, "other")] += n
    sessions = (
        Session.objects.filter(shop_id=shop_id, started_at__gte=since, started_at__lt=now)
        .values_list("person_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    for person_id, n in sessions:
        counts[person_id]["sessions"] += n
    members: dict[str, set[int]] = {key: set() for key in builtin.INTENT_KEYS}
    for person_id, c in counts.items():
        activity = builtin.IntentActivity(
            person_id=person_id,
            purchases=c["purchases"],
            carts_or_checkouts=c["carts_or_checkouts"],
            product_views=c["product_views"],
            sessions=c["sessions"],
        )
        members[builtin.intent_key(activity)].add(person_id)
    return members


def _orders(*, shop_id: int, now: datetime) -> Any:
    return Order.objects.filter(
        shop_id=shop_id, person__isnull=False, is_cancelled=False, placed_at__lt=now
    )


def _value_members(*, shop_id: int, now: datetime) -> dict[str, set[int]]:
    members: dict[str, set[int]] = {key: set() for key in builtin.VALUE_KEYS}
    for person_id, key in value_bands_get(shop_id=shop_id, now=now).items():
        members[key].add(person_id)
    return members


def _churn_members(*, shop_id: int, now: datetime) -> set[int]:
    purchases: dict[int, list[datetime]] = defaultdict(list)
    for person_id, placed_at in _orders(shop_id=shop_id, now=now).values_list(
        "person_id", "placed_at"
    ):
        purchases[person_id].append(placed_at)
    last_session: dict[int, datetime] = dict(
        Session.objects.filter(shop_id=shop_id, person_id__in=list(purchases), started_at__lt=now)
        .values_list("person_id")
        .annotate(last=Max("ended_at"))
        .order_by()
    )
    churned = set()
    for person_id, times in purchases.items():
        # An order is activity too: a Shopify order may arrive without a tracked session.
        last_active = max([*times, last_session.get(person_id, times[0])])
        if builtin.is_churn_risk(purchases=times, last_active_at=last_active, now=now):
            churned.add(person_id)
    return churned


def _predicted_members(*, shop_id: int) -> dict[str, set[int]]:
    """From the stored predictions (refreshed nightly by `customer_predictions_refresh`)."""
    rows = CustomerPrediction.objects.filter(shop_id=shop_id).values_list(
        "person_id", "revenue", "expected_revenue_365", "churn_band"
    )
    return builtin.predicted_members(builtin.CustomerOutlook(*row) for row in rows.iterator())


def predicted_segments_sync(*, shop_id: int, now: datetime) -> RefreshResult:
    """Bring the predicted segments up to the stored predictions (after a refresh of them)."""
    added = removed = 0
    for key, person_ids in _predicted_members(shop_id=shop_id).items():
        a, r = _memberships_sync(
            segment=_builtin_segment(shop_id=shop_id, key=key), person_ids=person_ids, now=now
        )
        added, removed = added + a, removed + r
    return RefreshResult(
        shop_id=shop_id, segments=len(builtin.PREDICTED_KEYS), added=added, removed=removed
    )


def _builtin_segment(*, shop_id: int, key: str) -> Segment:
    segment, _ = Segment.objects.get_or_create(
        shop_id=shop_id,
        key=key,
        kind=Segment.Kind.BUILTIN,
        defaults={"name": builtin.NAMES[key]},
    )
    return segment


def _memberships_sync(*, segment: Segment, person_ids: set[int], now: datetime) -> tuple[int, int]:
    """Make the segment's members exactly `person_ids`; members who stay keep their `since`."""
    with transaction.atomic():
        existing = dict(
            SegmentMembership.objects.filter(segment=segment).values_list("person_id", "id")
        )
        gone = [pk for person_id, pk in existing.items() if person_id not in person_ids]
        for start in range(0, len(gone), BATCH_SIZE):
            SegmentMembership.objects.filter(id__in=gone[start : start + BATCH_SIZE]).delete()
        new = sorted(person_ids - existing.keys())
        SegmentMembership.objects.bulk_create(
            [SegmentMembership(segment=segment, person_id=pid, since=now) for pid in new],
            batch_size=BATCH_SIZE,
            ignore_conflicts=True,
        )
        segment.member_count = len(person_ids)
        segment.refreshed_at = now
        segment.save(update_fields=["member_count", "refreshed_at"])
    return len(new), len(gone)


def _rule_members(*, segment: Segment, now: datetime) -> set[int]:
    q = rules_to_q(rules_parse(segment.rules), shop_id=segment.shop_id, now=now)
    return set(Person.objects.filter(q, shop_id=segment.shop_id).values_list("id", flat=True))


def segments_refresh(*, shop_id: int, now: datetime) -> RefreshResult:
    """Recompute every segment of a shop as of `now`; running it twice changes nothing."""
    targets: dict[str, set[int]] = {
        **_intent_members(shop_id=shop_id, now=now),
        **_value_members(shop_id=shop_id, now=now),
        builtin.CHURN_KEY: _churn_members(shop_id=shop_id, now=now),
        **_predicted_members(shop_id=shop_id),
    }
    added = removed = 0
    for key, person_ids in targets.items():
        a, r = _memberships_sync(
            segment=_builtin_segment(shop_id=shop_id, key=key), person_ids=person_ids, now=now
        )
        added, removed = added + a, removed + r
    rule_segments = list(Segment.objects.filter(shop_id=shop_id, kind=Segment.Kind.RULE))
    for segment in rule_segments:
        try:
            person_ids = _rule_members(segment=segment, now=now)
        except RuleError as exc:
            # Rules are validated on every write (API and admin); a row saved before that was so
            # must not stop the rest.
            logger.warning("segment %s has invalid rules, skipped: %s", segment.pk, exc)
            continue
        a, r = _memberships_sync(segment=segment, person_ids=person_ids, now=now)
        added, removed = added + a, removed + r
    result = RefreshResult(
        shop_id=shop_id, segments=len(targets) + len(rule_segments), added=added, removed=removed
    )
    logger.info("segments refreshed: %s", result)
    return result


def segment_validate(*, shop: Shop, name: str, rules: Any, segment: Segment | None = None) -> None:
    """The rules a rule segment's writes keep, for the API and the admin alike: rules in the
    grammar of segments/rules.py, a name unique in the shop (built-in names are taken).
    `segment` is the one being edited, if any."""
    try:
        rules_parse(rules)
    except RuleError as exc:
        raise ApplicationError("Invalid segment rules.", fields={"rules": [str(exc)]}) from None
    others = Segment.objects.filter(shop=shop, name=name)
    if segment is not None:
        others = others.exclude(pk=segment.pk)
    if name in builtin.NAMES.values() or others.exists():
        raise ApplicationError(
            "A segment with this name already exists.",
            code="duplicate",
            fields={"name": ["already exists"]},
        )


def segment_create(*, shop: Shop, name: str, rules: Any, now: datetime) -> Segment:
    """Create a rule segment and materialise its members at once."""
    segment_validate(shop=shop, name=name, rules=rules)
    segment = Segment.objects.create(shop=shop, name=name, kind=Segment.Kind.RULE, rules=rules)
    _memberships_sync(segment=segment, person_ids=_rule_members(segment=segment, now=now), now=now)
    return segment


def segment_update(*, segment: Segment, name: str, rules: Any, now: datetime) -> Segment:
    """Rename a rule segment or change its rules, and materialise its members at once."""
    if segment.kind != Segment.Kind.RULE:
        raise ApplicationError(
            "Built-in segments are computed, not edited.",
            code="permission_denied",
            status=403,
        )
    segment_validate(shop=segment.shop, name=name, rules=rules, segment=segment)
    segment.name, segment.rules = name, rules
    segment.save(update_fields=["name", "rules"])
    _memberships_sync(segment=segment, person_ids=_rule_members(segment=segment, now=now), now=now)
    return segment


def persons_merged(*, survivor_id: int, loser_ids: list[int]) -> None:
    """settings.PERSON_MERGE_HOOKS: the survivor keeps each segment from the earliest `since`.

    A membership only the losers hold moves to the survivor (the hourly refresh then decides
    whether the merged person still belongs); for a segment both hold, the survivor's row takes
    the earlier entry date, and the losers' rows go with them. Customer predictions are left to
    the nightly refresh, which recomputes the survivor from the merged orders.
    """
    losers = SegmentMembership.objects.filter(person_id__in=loser_ids)
    earliest: dict[int, datetime] = {}
    for segment_id, since in losers.values_list("segment_id", "since"):
        earliest[segment_id] = min(since, earliest.get(segment_id, since))
    held = dict(
        SegmentMembership.objects.filter(
            person_id=survivor_id, segment_id__in=earliest
        ).values_list("segment_id", "since")
    )
    for segment_id, since in earliest.items():
        if segment_id not in held:
            SegmentMembership.objects.create(
                segment_id=segment_id, person_id=survivor_id, since=since
            )
        elif since < held[segment_id]:
            SegmentMembership.objects.filter(person_id=survivor_id, segment_id=segment_id).update(
                since=since
            )
