"""Session paths for funnels and the recovery list (`SessionPath`, `DailySessionPaths`)."""

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import orjson

from analytics.models import CART_TYPES, DailySessionPaths, SessionPath
from analytics.periods import EPOCH, SESSION_SPAN, Period, local_date
from analytics.session_arrays import PackSession, paths_pack
from analytics.sql import INSERT_BATCH, EpochMicroseconds, rows_insert
from clickserver.chunking import chunks
from events.models import Event, Session

# Session id → (started_at, person id, source, device, country).
Sessions = dict[int, tuple[datetime, int | None, str, str, str]]
# Session id → its events as (microseconds since 1970, event id, type), in funnel order.
SessionEvents = dict[int, list[tuple[int, int, str]]]


def paths_recompute(
    *,
    shop_id: int,
    start: datetime,
    end: datetime,
    period: Period,
    excluded: frozenset[int] = frozenset(),
) -> None:
    """One `SessionPath` per session started in `[start, end)`: its events in funnel order; and
    the `DailySessionPaths` of the period's days from the same events. Sessions of the
    `excluded` people (tagged bots) get no path: funnels and the recovery list leave them out."""
    sessions, events = _session_events(shop_id=shop_id, start=start, end=end)
    # An excluded session's old path is deleted below with the others and not written again.
    if excluded:
        events = {
            session_id: items
            for session_id, items in events.items()
            if sessions[session_id][1] not in excluded
        }
    paths = [
        _path_row(shop_id, session_id, sessions[session_id], items)
        for session_id, items in events.items()
    ]
    # A late event can move a session's start out of the range its old row lies in. Two
    # deletes, each on an index: one OR over a subquery made MariaDB scan every shop's paths.
    SessionPath.objects.filter(shop_id=shop_id, started_at__gte=start, started_at__lt=end).delete()
    for chunk in chunks(list(sessions), INSERT_BATCH):
        SessionPath.objects.filter(session_id__in=chunk).delete()
    rows_insert(SessionPath, paths)
    _day_paths_recompute(shop_id=shop_id, period=period, sessions=sessions, events=events)


def _session_events(
    *, shop_id: int, start: datetime, end: datetime
) -> tuple[Sessions, SessionEvents]:
    """The sessions started in `[start, end)` and their events, each session's sorted."""
    in_range = Session.objects.filter(shop_id=shop_id, started_at__gte=start, started_at__lt=end)
    sessions: Sessions = {
        row[0]: row[1:]
        for row in in_range.values_list(
            "id", "started_at", "person_id", "utm_source", "device", "country"
        )
    }
    events: SessionEvents = defaultdict(list)
    for session_id, at, event_id, kind in (
        Event.objects.filter(
            shop_id=shop_id,
            occurred_at__gte=start,
            occurred_at__lt=end + SESSION_SPAN,
            session_id__isnull=False,
        )
        .annotate(at=EpochMicroseconds("occurred_at"))
        .values_list("session_id", "at", "id", "type")
    ):
        if session_id in sessions:
            events[session_id].append((at, event_id, kind))
    for items in events.values():
        items.sort()
    return sessions, events


def _path_row(
    shop_id: int,
    session_id: int,
    session: tuple[datetime, int | None, str, str, str],
    items: list[tuple[int, int, str]],
) -> dict[str, Any]:
    """The `SessionPath` row of one session from its sorted events."""
    started_at, person_id, source, device, country = session
    first = items[0][0]
    kinds = [kind for _, _, kind in items]
    ties = [i for i in range(1, len(items)) if items[i][0] == items[i - 1][0]]
    carts = [(at, event_id) for at, event_id, kind in items if kind in CART_TYPES]
    last_cart = max(carts) if carts else None
    return {
        "session_id": session_id,
        "shop_id": shop_id,
        "started_at": started_at,
        "person_id": person_id,
        "utm_source": source,
        "device": device,
        "country": country,
        "first_at_us": first,
        "last_at_us": items[-1][0],
        "kinds": orjson.dumps(kinds).decode(),
        "offsets": orjson.dumps([at - first for at, _, _ in items]).decode(),
        "ties": orjson.dumps(ties).decode() if ties else "",
        "is_abandoned": bool(carts) and "purchase" not in kinds,
        "last_cart_at": EPOCH + timedelta(microseconds=last_cart[0]) if last_cart else None,
        "last_cart_event_id": last_cart[1] if last_cart else None,
    }


def _day_paths_recompute(
    *, shop_id: int, period: Period, sessions: Sessions, events: SessionEvents
) -> None:
    """Replace the `DailySessionPaths` of the period's days from the sessions started in it."""
    by_day: dict[date, list[PackSession]] = defaultdict(list)
    for session_id, items in sorted(events.items()):
        started_at, _, source, device, country = sessions[session_id]
        if period.start <= started_at < period.end:
            day = local_date(started_at, period.tz)
            by_day[day].append(((source, device, country), [(at, kind) for at, _, kind in items]))
    DailySessionPaths.objects.filter(
        shop_id=shop_id, day__gte=period.first, day__lte=period.last
    ).delete()
    rows_insert(
        DailySessionPaths,
        (
            {
                "shop_id": shop_id,
                "day": day,
                "session_count": len(day_sessions),
                "event_count": sum(len(items) for _, items in day_sessions),
                "data": paths_pack(day_sessions),
            }
            for day, day_sessions in by_day.items()
        ),
    )
