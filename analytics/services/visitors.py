"""Daily visitor bitmaps (`DailyVisitors`)."""

from collections import defaultdict
from datetime import UTC, date

from django.db.models.functions import TruncHour

from analytics.bitmaps import ids_pack
from analytics.models import DailyVisitors
from analytics.periods import Period, day_of, local_date
from analytics.sql import rows_insert
from events.models import Event


def visitors_recompute(
    *, shop_id: int, period: Period, excluded: frozenset[int] = frozenset()
) -> None:
    """Persons with at least one event on each local day (SPEC's visitor definition), less the
    `excluded` people (tagged bots)."""
    visitors: dict[date, set[int]] = defaultdict(set)
    new: dict[date, set[int]] = defaultdict(set)
    # Distinct (UTC hour, person) in SQL keeps the rows near the session count, not the events.
    for hour, person_id, first_seen_at in (
        Event.objects.filter(
            shop_id=shop_id, occurred_at__gte=period.start, occurred_at__lt=period.end
        )
        .exclude(person=None)
        .annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
        .values_list("hour", "person_id", "person__first_seen_at")
        .distinct()
    ):
        if person_id in excluded:
            continue
        day = day_of(hour, period)
        visitors[day].add(person_id)
        if local_date(first_seen_at, period.tz) == day:
            new[day].add(person_id)
    DailyVisitors.objects.filter(
        shop_id=shop_id, day__gte=period.first, day__lte=period.last
    ).delete()
    rows_insert(
        DailyVisitors,
        (
            {
                "shop_id": shop_id,
                "day": day,
                "visitor_count": len(people),
                "new_count": len(new[day]),
                "visitors": ids_pack(people),
                "new": ids_pack(new[day]),
            }
            for day, people in visitors.items()
        ),
    )
