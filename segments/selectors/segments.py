"""Every read of the segments app, scoped to a shop."""

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from django.db.models import (
    Count,
    DecimalField,
    F,
    IntegerField,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from clickserver.errors import ApplicationError
from clickserver.money import money_format
from events.models import Order, Person, Session, Shop
from segments.builtin import value_keys
from segments.models import Segment, SegmentMembership


@dataclass(frozen=True, slots=True)
class SegmentOut:
    id: int
    name: str
    kind: str
    key: str
    rules: dict[str, Any]
    member_count: int
    created_at: datetime
    refreshed_at: datetime | None


@dataclass(frozen=True, slots=True)
class MemberRow:
    person_id: int
    user_id: str
    first_seen_at: datetime
    last_seen_at: datetime
    since: datetime


@dataclass(frozen=True, slots=True)
class IdentifiedUserRow:
    person_id: int
    user_id: str
    first_seen_at: datetime
    last_seen_at: datetime
    session_count: int
    order_count: int
    revenue: str  # money as a decimal string, never a float


@dataclass(frozen=True, slots=True)
class IdentifiedSessionRow:
    session_id: int
    person_id: int
    user_id: str
    started_at: datetime
    ended_at: datetime
    duration_seconds: int
    event_count: int
    pageview_count: int
    entry_url: str
    utm_source: str
    device: str
    country: str
    is_converted: bool
    revenue: str


def _out(segment: Segment) -> SegmentOut:
    return SegmentOut(
        id=segment.pk,
        name=segment.name,
        kind=segment.kind,
        key=segment.key,
        rules=segment.rules,
        member_count=segment.member_count,
        created_at=segment.created_at,
        refreshed_at=segment.refreshed_at,
    )


def segment_list(*, shop: Shop) -> list[SegmentOut]:
    return [_out(segment) for segment in Segment.objects.filter(shop=shop).order_by("kind", "name")]


def segment_out(*, segment: Segment) -> SegmentOut:
    return _out(segment)


def segment_get(*, shop: Shop, segment_id: int) -> Segment:
    segment = Segment.objects.filter(shop=shop, pk=segment_id).first()
    if segment is None:
        raise ApplicationError("No such segment.", code="not_found", status=404)
    return segment


def segment_members_query(*, segment: Segment) -> QuerySet:
    return (
        SegmentMembership.objects.filter(segment=segment)
        .order_by("person_id")
        .values_list(
            "person_id", "person__user_id", "person__first_seen_at", "person__last_seen_at", "since"
        )
    )


def member_rows(*, page: list[tuple]) -> list[MemberRow]:
    return [MemberRow(*row) for row in page]


def identified_users_query(*, shop: Shop) -> QuerySet:
    sessions = (
        Session.objects.filter(person=OuterRef("pk"))
        .order_by()
        .values("person")
        .annotate(n=Count("id"))
        .values("n")
    )
    orders = (
        Order.objects.filter(person=OuterRef("pk"), is_cancelled=False).order_by().values("person")
    )
    money = DecimalField(max_digits=16, decimal_places=2)
    return (
        Person.objects.filter(shop=shop)
        .exclude(user_id="")
        .annotate(
            session_count=Coalesce(Subquery(sessions, output_field=IntegerField()), Value(0)),
            order_count=Coalesce(
                Subquery(orders.annotate(n=Count("id")).values("n"), output_field=IntegerField()),
                Value(0),
            ),
            net_revenue=Coalesce(
                Subquery(
                    orders.annotate(r=Sum(F("total") - F("refunded_amount"))).values("r"),
                    output_field=money,
                ),
                Value(0),
                output_field=money,
            ),
        )
        .order_by("-last_seen_at", "id")
        .values_list(
            "id",
            "user_id",
            "first_seen_at",
            "last_seen_at",
            "session_count",
            "order_count",
            "net_revenue",
        )
    )


def identified_user_rows(*, page: list[tuple]) -> list[IdentifiedUserRow]:
    return [
        IdentifiedUserRow(
            person_id=pid,
            user_id=uid,
            first_seen_at=first,
            last_seen_at=last,
            session_count=sessions,
            order_count=orders,
            revenue=money_format(revenue),
        )
        for pid, uid, first, last, sessions, orders, revenue in page
    ]


def identified_sessions_query(*, shop: Shop, start: datetime, end: datetime) -> QuerySet:
    return (
        Session.objects.filter(shop=shop, started_at__gte=start, started_at__lt=end)
        .exclude(person__user_id="")
        .order_by("-started_at", "id")
        .values_list(
            "id",
            "person_id",
            "person__user_id",
            "started_at",
            "ended_at",
            "duration_seconds",
            "event_count",
            "pageview_count",
            "entry_url",
            "utm_source",
            "device",
            "country",
            "is_converted",
            "revenue",
        )
    )


def identified_session_rows(*, page: list[tuple]) -> list[IdentifiedSessionRow]:
    names = [f.name for f in fields(IdentifiedSessionRow)]
    rows = [dict(zip(names, row, strict=True)) for row in page]
    return [
        IdentifiedSessionRow(**{**row, "revenue": money_format(row["revenue"])}) for row in rows
    ]


def value_bands_get(*, shop_id: int, now: datetime) -> dict[int, str]:
    """Each person's value band (`value_vip` … `value_low`) by their revenue before `now`:
    the value segments' definition, also read by the reports (settings.REPORT_VALUE_BANDS)."""
    revenue = dict(
        Order.objects.filter(
            shop_id=shop_id, person__isnull=False, is_cancelled=False, placed_at__lt=now
        )
        .values_list("person_id")
        .annotate(revenue=Sum(F("total") - F("refunded_amount")))
        .order_by()
    )
    return value_keys(revenue)
