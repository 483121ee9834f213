"""Sessions, visitors, conversion, orders, revenue and AOV per person trait of a period.

A trait belongs to the person, not to the session or the order, and it changes (a birthday, a
later identify), so it is not a rollup dimension: the read groups the period's sessions, orders
and refunds by person in the database (each on its `(shop, time)` index), then gives every person
their value once in Python and sums. Breakdowns (an allow-list, `AUDIENCE_BREAKDOWNS`):

- `age_band`: `events.traits.age_band` of the person's traits on the period's last day (the same
  rule as the customers API); `none` for persons without a usable age;
- `visitor_type`: `new` when the person was first seen in the period, else `returning`.

Orders and refunds without a person land in `none`. Session filters (`utm_source`, `device`,
`country`) restrict the sessions only: orders are not tied to sessions (as in the KPIs).
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db.models import Count, Q, Sum

from analytics.selectors.query import Query, ratio
from clickserver.db_routers import analytics_db
from clickserver.money import money_format
from events.models import Order, Person, Refund, Session
from events.traits import AGE_BANDS, age_band

NONE = "none"
AUDIENCE_BREAKDOWNS = {
    "age_band": (*AGE_BANDS, NONE),
    "visitor_type": ("new", "returning", NONE),
}
# Persons are read by id in chunks: MariaDB takes long IN lists, but a bounded packet is kinder.
PERSON_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class AudienceRow:
    value: str
    sessions: int
    visitors: int
    converted_sessions: int
    conversion: float
    orders: int
    revenue: str
    aov: str


@dataclass(frozen=True, slots=True)
class Audience:
    breakdown: str
    rows: list[AudienceRow]
    start: date
    end: date


@dataclass(slots=True)
class _Sums:
    sessions: int = 0
    visitors: int = 0
    converted: int = 0
    orders: int = 0
    gross: Decimal = Decimal(0)
    refunds: Decimal = Decimal(0)


def _persons_value(
    *, shop_id: int, person_ids: Iterable[int], breakdown: str, today: date, start: datetime
) -> dict[int, str]:
    ids = sorted(person_ids)
    field = "traits" if breakdown == "age_band" else "first_seen_at"
    values: dict[int, str] = {}
    for offset in range(0, len(ids), PERSON_CHUNK):
        rows = (
            Person.objects.using(analytics_db())
            .filter(shop_id=shop_id, pk__in=ids[offset : offset + PERSON_CHUNK])
            .values_list("pk", field)
        )
        for pk, attribute in rows:
            if breakdown == "age_band":
                values[pk] = age_band(attribute, today=today) or NONE
            else:
                values[pk] = "new" if attribute >= start else "returning"
    return values


def audience_get(*, query: Query, breakdown: str) -> Audience:
    """Every value of `breakdown` (one of AUDIENCE_BREAKDOWNS), in its fixed order."""
    shop_id, period = query.shop.pk, query.period
    db = analytics_db()
    sessions = (
        Session.objects.using(db)
        .filter(
            shop_id=shop_id,
            started_at__gte=period.start,
            started_at__lt=period.end,
            **query.filters.as_lookup(),
        )
        .values("person_id")
        .annotate(n=Count("id"), converted=Count("id", filter=Q(is_converted=True)))
    )
    orders = (
        Order.objects.using(db)
        .filter(shop_id=shop_id, placed_at__gte=period.start, placed_at__lt=period.end)
        .filter(is_cancelled=False)
        .values("person_id")
        .annotate(n=Count("id"), total=Sum("total"))
    )
    refunds = (
        Refund.objects.using(db)
        .filter(shop_id=shop_id, refunded_at__gte=period.start, refunded_at__lt=period.end)
        .values("order__person_id")
        .annotate(total=Sum("amount"))
    )
    by_person: dict[int | None, _Sums] = defaultdict(_Sums)
    for session in sessions:
        sums = by_person[session["person_id"]]
        sums.sessions, sums.converted, sums.visitors = session["n"], session["converted"], 1
    for order in orders:
        sums = by_person[order["person_id"]]
        sums.orders, sums.gross = order["n"], order["total"] or Decimal(0)
    for refund in refunds:
        by_person[refund["order__person_id"]].refunds += refund["total"] or Decimal(0)

    values = _persons_value(
        shop_id=shop_id,
        person_ids=(pk for pk in by_person if pk is not None),
        breakdown=breakdown,
        today=period.last,
        start=period.start,
    )
    totals: dict[str, _Sums] = {value: _Sums() for value in AUDIENCE_BREAKDOWNS[breakdown]}
    for pk, sums in by_person.items():
        total = totals[values.get(pk, NONE) if pk is not None else NONE]
        total.sessions += sums.sessions
        total.visitors += sums.visitors
        total.converted += sums.converted
        total.orders += sums.orders
        total.gross += sums.gross
        total.refunds += sums.refunds
    rows = []
    for value, total in totals.items():
        revenue = total.gross - total.refunds
        rows.append(
            AudienceRow(
                value=value,
                sessions=total.sessions,
                visitors=total.visitors,
                converted_sessions=total.converted,
                conversion=ratio(total.converted, total.sessions),
                orders=total.orders,
                revenue=money_format(revenue),
                aov=money_format(revenue / total.orders if total.orders else Decimal(0)),
            )
        )
    return Audience(breakdown=breakdown, rows=rows, start=period.first, end=period.last)
