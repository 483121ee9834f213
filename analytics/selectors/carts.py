"""Cart abandonment of a period and the recovery list of people who left a cart."""

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db.models import QuerySet

from analytics.models import CART_TYPES, SessionPath
from analytics.periods import SESSION_SPAN, Period
from analytics.selectors.products import ProductRow, top_products_by
from analytics.selectors.query import Query, ratio
from analytics.selectors.rollups import rollup_totals
from clickserver.db_routers import analytics_db
from clickserver.money import money_format
from events.models import Event, Person


@dataclass(frozen=True, slots=True)
class RecoveryRow:
    person_id: int
    user_id: str
    session_id: int
    abandoned_at: datetime


@dataclass(frozen=True, slots=True)
class AbandonedCarts:
    rate: float
    cart_sessions: int
    abandoned_sessions: int
    value: str
    products: list[ProductRow]
    rows: list[RecoveryRow]
    start: date
    end: date


def abandoned_carts_get(*, query: Query, limit: int) -> AbandonedCarts:
    totals = rollup_totals(query)
    recovery = _recovery_list(query, limit=limit)
    return AbandonedCarts(
        rate=ratio(totals["abandoned_session_count"], totals["cart_session_count"]),
        cart_sessions=totals["cart_session_count"],
        abandoned_sessions=totals["abandoned_session_count"],
        value=money_format(totals["abandoned_value"]),
        products=[
            row
            for row in top_products_by(query, order_by="abandoned_carts", limit=10)
            if row.abandoned_carts
        ],
        rows=recovery,
        start=query.period.first,
        end=query.period.last,
    )


# The walk's first page holds this many sessions per person wanted (anonymous sessions are
# skipped); each further page is twice the last, up to RECOVERY_PAGE_MAX.
RECOVERY_PAGE_PER_PERSON = 5
RECOVERY_PAGE_MAX = 5000

# (at, event id, session id, person id): an abandoned session at its newest cart of the period.
CartRow = tuple[datetime, int, int, int | None]


def _recovery_list(query: Query, *, limit: int) -> list[RecoveryRow]:
    """Identified people whose sessions of the period had a cart and no purchase, newest first.

    A session's place is its newest cart event of the period (time, then event id). Abandoned
    sessions are walked backwards along the `SessionPath` index (shop, is_abandoned,
    last_cart_at) a page at a time, so the work stops once `limit` people are found. Sessions
    whose newest cart lies after the period's end (they started in its last hours) take their
    newest cart before the end from the log.
    """
    period = query.period
    abandoned = SessionPath.objects.using(analytics_db()).filter(
        shop_id=query.shop.pk,
        is_abandoned=True,
        started_at__gte=period.start,
        started_at__lt=period.end,
        **query.filters.as_lookup(),
    )
    # Newest first, merged into the main walk.
    pending = _late_carts(abandoned, period)
    walk = (
        abandoned.filter(last_cart_at__lt=period.end)
        .order_by("-last_cart_at", "-last_cart_event_id")
        .values_list("last_cart_at", "last_cart_event_id", "session_id", "person_id")
    )
    found: dict[int, RecoveryRow] = {}
    users: dict[int, str] = {}
    offset, size = 0, max(limit * RECOVERY_PAGE_PER_PERSON, 50)
    while len(found) < limit:
        page = list(walk[offset : offset + size])
        offset, size = offset + size, min(size * 2, RECOVERY_PAGE_MAX)
        if not page:
            _people_take(pending, found=found, users=users, limit=limit)
            break
        merged: list[tuple[Any, ...]] = []
        for row in page:
            while pending and pending[0][:2] > (row[0], row[1]):
                merged.append(pending.pop(0))
            merged.append(row)
        _people_take(merged, found=found, users=users, limit=limit)
    return list(found.values())


def _late_carts(abandoned: QuerySet[SessionPath], period: Period) -> list[CartRow]:
    """The abandoned sessions whose newest cart lies after the period's end, at their newest
    cart event before the end (read from the log), newest first."""
    db = analytics_db()
    # Bounded above too: a session started in the period has its events within SESSION_SPAN.
    late = dict(
        abandoned.filter(
            last_cart_at__gte=period.end, last_cart_at__lt=period.end + SESSION_SPAN
        ).values_list("session_id", "person_id")
    )
    edge: dict[int, tuple[datetime, int]] = {}
    for session_id, at, event_id in (
        Event.objects.using(db)
        .filter(
            session_id__in=list(late),
            type__in=CART_TYPES,
            occurred_at__gte=period.start,
            occurred_at__lt=period.end,
        )
        .values_list("session_id", "occurred_at", "id")
    ):
        edge[session_id] = max(edge.get(session_id, (at, event_id)), (at, event_id))
    return sorted(
        (
            (at, event_id, session_id, late[session_id])
            for session_id, (at, event_id) in edge.items()
        ),
        reverse=True,
    )


def _people_take(
    rows: list[CartRow], *, found: dict[int, RecoveryRow], users: dict[int, str], limit: int
) -> None:
    """Add the identified people of `rows` (newest first) to `found`, each at its first row,
    until `limit`; `users` caches the user ids already read."""
    wanted = {row[3] for row in rows if row[3] is not None} - users.keys()
    users.update(
        Person.objects.using(analytics_db()).filter(id__in=wanted).values_list("id", "user_id")
    )
    for at, _, session_id, person_id in rows:
        if person_id is None or person_id in found or len(found) >= limit:
            continue
        if users.get(person_id):
            found[person_id] = RecoveryRow(
                person_id=person_id,
                user_id=users[person_id],
                session_id=session_id,
                abandoned_at=at,
            )
