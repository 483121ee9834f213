"""Sessions, visitors, conversion, orders, revenue and AOV per person trait of a period.

A trait belongs to the person, not to the session or the order, and it changes (a birthday, a
later identify), so it is not a rollup dimension. The read is direct, in five queries whatever
the traffic: the period's sessions as (person, converted) pairs from the covering index
`session_shop_started_person` (shop, started_at, person, is_converted: an index-only range
scan), its non-cancelled orders and its refunds by person (on their `(shop, time)` indexes),
and the persons' values; then numpy sums per value. Breakdowns (an allow-list,
`AUDIENCE_BREAKDOWNS`):

- `age_band`: `events.traits.age_band` of the person's traits on the period's last day (the same
  rule as the customers API); only persons holding an `age`, `birth_date` or `birthday` key are
  read; `none` for everyone else;
- `visitor_type`: `new` when the person was first seen in the period (index
  `person_shop_first_seen`), else `returning`.

Orders and refunds without a person land in `none`. Session filters (`utm_source`, `device`,
`country`) restrict the sessions only (they leave the covering index: slower): orders are not
tied to sessions (as in the KPIs). Measured by `bench/audience.py` (docs/analytics.md).
"""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import numpy as np
from django.db.models import QuerySet
from django.db.models.fields.json import KT

from analytics.selectors.query import Query, ratio
from clickserver.db_routers import analytics_db
from clickserver.money import money_format
from events.models import Order, Person, Refund, Session
from events.traits import AGE_BANDS, BIRTH_DATE_TRAITS, age_band

NONE = "none"
AUDIENCE_BREAKDOWNS = {
    "age_band": (*AGE_BANDS, NONE),
    "visitor_type": ("new", "returning", NONE),
}


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


def _persons_value(*, query: Query, breakdown: str) -> dict[int, int]:
    """Person id → index into AUDIENCE_BREAKDOWNS[breakdown], for the persons whose value is
    not the default (`none` for age bands, `returning` for visitor types)."""
    shop_id, period = query.shop.pk, query.period
    values = AUDIENCE_BREAKDOWNS[breakdown]
    persons: QuerySet[Person] = Person.objects.using(analytics_db()).filter(shop_id=shop_id)
    if breakdown == "visitor_type":
        new = persons.filter(first_seen_at__gte=period.start, first_seen_at__lt=period.end)
        return dict.fromkeys(new.values_list("pk", flat=True), values.index("new"))
    index = {band: position for position, band in enumerate(values)}
    names = ("age", *BIRTH_DATE_TRAITS)
    with_age = persons.filter(traits__has_any_keys=names)
    # Only the three keys, as text: decoding every person's whole traits JSON was 2/3 of the
    # read at 100,000 persons. The rule reads a number and its text alike; a JSON true reads
    # as "true" on MariaDB (no age, as in the rule), as 1 on SQLite (an age of 1: no band).
    texts = with_age.values_list("pk", *(KT(f"traits__{name}") for name in names))
    known = {}
    for pk, *values in texts:
        traits = {
            name: value for name, value in zip(names, values, strict=True) if value is not None
        }
        band = age_band(traits, today=period.last)
        if band:
            known[pk] = index[band]
    return known


def _positions(
    person_ids: list[int | None], known: dict[int, int], *, default: int, none: int
) -> np.ndarray:
    """Each row's value position: its person's, `default` for other persons, `none` for rows
    without a person."""
    return np.fromiter(
        (none if pk is None else known.get(pk, default) for pk in person_ids),
        dtype=np.int64,
        count=len(person_ids),
    )


def audience_get(*, query: Query, breakdown: str) -> Audience:
    """Every value of `breakdown` (one of AUDIENCE_BREAKDOWNS), in its fixed order."""
    shop_id, period = query.shop.pk, query.period
    db = analytics_db()
    values = AUDIENCE_BREAKDOWNS[breakdown]
    size, none = len(values), values.index(NONE)
    default = none if breakdown == "age_band" else values.index("returning")
    known = _persons_value(query=query, breakdown=breakdown)

    sessions = list(
        Session.objects.using(db)
        .filter(
            shop_id=shop_id,
            started_at__gte=period.start,
            started_at__lt=period.end,
            **query.filters.as_lookup(),
        )
        .values_list("person_id", "is_converted")
    )
    session_persons = np.array([pk for pk, _ in sessions], dtype=np.int64)
    converted = np.array([is_converted for _, is_converted in sessions], dtype=np.int64)
    positions = _positions(session_persons.tolist(), known, default=default, none=none)
    session_counts = np.bincount(positions, minlength=size)
    converted_counts = np.bincount(positions, weights=converted, minlength=size)
    # Visitors: each distinct person once, at their position.
    persons, first = np.unique(session_persons, return_index=True)
    visitor_counts = (
        np.bincount(positions[first], minlength=size) if len(persons) else np.zeros(size)
    )

    orders = list(
        Order.objects.using(db)
        .filter(shop_id=shop_id, placed_at__gte=period.start, placed_at__lt=period.end)
        .filter(is_cancelled=False)
        .values_list("person_id", "total")
    )
    order_positions = _positions([pk for pk, _ in orders], known, default=default, none=none)
    refunds = list(
        Refund.objects.using(db)
        .filter(shop_id=shop_id, refunded_at__gte=period.start, refunded_at__lt=period.end)
        .values_list("order__person_id", "amount")
    )
    refund_positions = _positions([pk for pk, _ in refunds], known, default=default, none=none)
    # Money stays Decimal (exact cents); there are few orders next to sessions.
    revenue = [Decimal(0)] * size
    for position, (_, total) in zip(order_positions.tolist(), orders, strict=True):
        revenue[position] += total
    for position, (_, amount) in zip(refund_positions.tolist(), refunds, strict=True):
        revenue[position] -= amount
    order_counts = np.bincount(order_positions, minlength=size)

    rows = []
    for position, value in enumerate(values):
        n, won, placed = (
            int(session_counts[position]),
            int(converted_counts[position]),
            int(order_counts[position]),
        )
        rows.append(
            AudienceRow(
                value=value,
                sessions=n,
                visitors=int(visitor_counts[position]),
                converted_sessions=won,
                conversion=ratio(won, n),
                orders=placed,
                revenue=money_format(revenue[position]),
                aov=money_format(revenue[position] / placed if placed else Decimal(0)),
            )
        )
    return Audience(breakdown=breakdown, rows=rows, start=period.first, end=period.last)
