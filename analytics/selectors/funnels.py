"""Funnels over the period's sessions or persons, by the cheapest read that answers exactly.

`funnel_compute` picks one of four reads: the days' columnar paths (windowless session funnels
of distinct event types, the common dashboard funnel), session path shapes (windowless, with a
repeated type), one `SessionPath` per session (with a window), or the raw log (person funnels and
steps with property filters). Levels are those of `analytics.funnel_levels`.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import orjson

from analytics.funnel_levels import (
    FunnelResult,
    StepSpec,
    UnitEvent,
    UnitLevel,
    funnel_from_counts,
    funnel_levels,
    funnel_summarize,
    unit_level,
)
from analytics.models import DailySessionPaths, SessionPath
from analytics.periods import EPOCH, SESSION_SPAN
from analytics.selectors.query import Query
from analytics.session_arrays import GroupCounts, funnel_counts, paths_unpack
from analytics.sql import EpochMicroseconds
from clickserver.db_routers import analytics_db
from events.models import Event, Session

PERSON_FUNNEL_WINDOW = 14 * 24 * 3600
MICROSECONDS = 1_000_000


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class FunnelParams:
    steps: tuple[StepSpec, ...]
    unit: str = "session"
    strict: bool = False
    window: int | None = None
    breakdown: str = ""


@dataclass(frozen=True, slots=True)
class FunnelBreakdown:
    value: str
    result: FunnelResult


@dataclass(frozen=True, slots=True)
class Funnel:
    unit: str
    mode: str
    window: int | None
    steps: list[Any]
    units: int
    median_seconds_to_convert: float | None
    breakdown: list[FunnelBreakdown] = field(default_factory=list)
    start: date | None = None
    end: date | None = None


def funnel_compute(*, query: Query, params: FunnelParams) -> Funnel:
    """Funnel over the events of the period's sessions (or persons), by the cheapest read that
    gives the exact answer: the days' columnar paths, session path shapes, one path per session,
    or the raw events (persons, or steps with property filters)."""
    needs_properties = any(step.filters for step in params.steps)
    if params.unit == "person" or needs_properties:
        return _funnel_from_events(query, params, needs_properties=needs_properties)
    step_types = [step.event_type for step in params.steps]
    if params.window is None and len(set(step_types)) == len(step_types):
        return _funnel_from_day_paths(query, params)
    types = set(step_types)
    until = _micros(query.period.end + SESSION_SPAN)
    if params.window is None:
        levels, groups = _session_path_levels(query, params, types=types, until=until)
        return _funnel_from_levels(query, params, None, levels, groups)
    units, groups = _session_path_units(query, params, types=types, until=until)
    levels = funnel_levels(
        units.items(),
        params.steps,
        window=params.window * MICROSECONDS,
        strict=params.strict,
        start_from=None,
        start_before=None,
    )
    return _funnel_from_levels(query, params, params.window, levels, groups)


def _funnel_from_events(query: Query, params: FunnelParams, *, needs_properties: bool) -> Funnel:
    """A person funnel, or a session funnel whose steps filter on properties: from the raw log,
    read by the time-range index."""
    period = query.period
    window = params.window
    if params.unit == "person":
        window = window if window is not None else PERSON_FUNNEL_WINDOW
        horizon = period.end + timedelta(seconds=window)
    else:
        horizon = period.end + SESSION_SPAN
    events = Event.objects.using(analytics_db()).filter(
        shop_id=query.shop.pk, occurred_at__gte=period.start, occurred_at__lt=horizon
    )
    # Strict mode needs every event to see what lies between two steps.
    if not params.strict:
        events = events.filter(type__in=sorted({step.event_type for step in params.steps}))
    if not query.filters.is_empty:
        events = events.filter(**query.filters.as_lookup("session__"))
    key = "person_id" if params.unit == "person" else "session_id"
    columns = [key, "at", "id", "type"] + (["properties"] if needs_properties else [])
    units: dict[Any, list[UnitEvent]] = defaultdict(list)
    # Times come from the database as integer microseconds: converting a few hundred
    # thousand datetimes to aware Python objects would cost more than the whole funnel.
    rows = events.exclude(**{key: None}).annotate(at=EpochMicroseconds("occurred_at"))
    for row in rows.values_list(*columns):
        units[row[0]].append((row[1], row[2], row[3], row[4] if needs_properties else EMPTY))
    groups: dict[int, str] = {}
    if params.unit == "session":
        sessions = Session.objects.using(analytics_db()).filter(
            shop_id=query.shop.pk, started_at__gte=period.start, started_at__lt=period.end
        )
        groups = dict(sessions.values_list("id", params.breakdown or "id"))
        units = {k: v for k, v in units.items() if k in groups}
    for unit_events in units.values():
        unit_events.sort()
    levels = funnel_levels(
        units.items(),
        params.steps,
        window=window * MICROSECONDS if window is not None else None,
        strict=params.strict,
        start_from=_micros(period.start) if params.unit == "person" else None,
        start_before=_micros(period.end) if params.unit == "person" else None,
    )
    return _funnel_from_levels(query, params, window, levels, groups)


def _funnel_from_levels(
    query: Query,
    params: FunnelParams,
    window: int | None,
    levels: dict[Any, UnitLevel],
    groups: dict[int, str],
) -> Funnel:
    """The answer from each unit's level, split by the breakdown value of its session."""
    total = funnel_summarize(levels.values(), params.steps, scale=MICROSECONDS)
    breakdown = []
    if params.breakdown:
        by_value: dict[str, list] = defaultdict(list)
        for unit_key, level in levels.items():
            by_value[groups[unit_key] or ""].append(level)
        breakdown = [
            FunnelBreakdown(
                value=value, result=funnel_summarize(items, params.steps, scale=MICROSECONDS)
            )
            for value, items in sorted(by_value.items())
        ]
    return _funnel_answer(query, params, window, total, breakdown)


def _funnel_from_day_paths(query: Query, params: FunnelParams) -> Funnel:
    """A windowless session funnel of distinct event types over the days' columnar paths."""
    period = query.period
    days = [
        paths_unpack(blob)
        for blob in DailySessionPaths.objects.using(analytics_db())
        .filter(shop_id=query.shop.pk, day__gte=period.first, day__lte=period.last)
        .values_list("data", flat=True)
    ]
    by_group = funnel_counts(
        days,
        [step.event_type for step in params.steps],
        strict=params.strict,
        filters=query.filters.as_lookup(),
        breakdown=params.breakdown,
    )
    steps, n = params.steps, len(params.steps)
    everything = GroupCounts(reached=[0] * (n + 1), durations=[])
    for counts in by_group.values():
        everything.reached[:] = [
            a + b for a, b in zip(everything.reached, counts.reached, strict=True)
        ]
        everything.durations.extend(counts.durations)
    total = funnel_from_counts(everything.reached, everything.durations, steps, scale=MICROSECONDS)
    breakdown = (
        [
            FunnelBreakdown(
                value=value,
                result=funnel_from_counts(
                    counts.reached, counts.durations, steps, scale=MICROSECONDS
                ),
            )
            for value, counts in sorted(by_group.items())
        ]
        if params.breakdown
        else []
    )
    return _funnel_answer(query, params, None, total, breakdown)


def _funnel_answer(
    query: Query,
    params: FunnelParams,
    window: int | None,
    total: FunnelResult,
    breakdown: list[FunnelBreakdown],
) -> Funnel:
    return Funnel(
        unit=params.unit,
        mode="strict" if params.strict else "ordered",
        window=window,
        steps=total.steps,
        units=total.units,
        median_seconds_to_convert=total.median_seconds_to_convert,
        breakdown=breakdown,
        start=query.period.first,
        end=query.period.last,
    )


EMPTY: dict[str, Any] = {}


PATH_CHUNK = 2000


def _session_paths(query: Query):
    return SessionPath.objects.using(analytics_db()).filter(
        shop_id=query.shop.pk,
        started_at__gte=query.period.start,
        started_at__lt=query.period.end,
        **query.filters.as_lookup(),
    )


def _path_events(
    first: int, kinds: str, offsets: str, *, types: set[str], strict: bool, since: int, until: int
) -> list[UnitEvent]:
    """A session's events in `[since, until)` (all in strict mode, else the steps' types)."""
    events = [
        (first + offset, order, kind, EMPTY)
        for order, (kind, offset) in enumerate(
            zip(orjson.loads(kinds), orjson.loads(offsets), strict=True)
        )
        if strict or kind in types
    ]
    if events and (events[0][0] < since or events[-1][0] >= until):
        events = [event for event in events if since <= event[0] < until]
    return events


def _session_path_units(
    query: Query, params: FunnelParams, *, types: set[str], until: int
) -> tuple[dict[int, list[UnitEvent]], dict[int, str]]:
    """The period's sessions as funnel units, one `SessionPath` row each instead of every event.

    The same events the raw read takes: the session's events in `[period start, until)` (all of
    them in strict mode, else those of the steps' types), ordered by (time, id).
    """
    attribute = params.breakdown or "session_id"
    since = _micros(query.period.start)
    units: dict[int, list[UnitEvent]] = {}
    groups: dict[int, str] = {}
    for session_id, group, first, kinds, offsets in _session_paths(query).values_list(
        "session_id", attribute, "first_at_us", "kinds", "offsets"
    ):
        groups[session_id] = group
        events = _path_events(
            first, kinds, offsets, types=types, strict=params.strict, since=since, until=until
        )
        if events:
            units[session_id] = events
    return units, groups


def _shape_level(
    kinds: str, ties: str, steps: tuple[StepSpec, ...], *, types: set[str], strict: bool
) -> UnitLevel | None:
    """The level of every session with these event types and ties (None: not a unit).

    Without a window the funnel looks at the order of the events and at which of them tie, never
    at the times themselves, so stand-in times that keep both give the same level.
    """
    tied = set(orjson.loads(ties)) if ties else set()
    events, at = [], 0
    for order, kind in enumerate(orjson.loads(kinds)):
        at += order not in tied
        if strict or kind in types:
            events.append((at, order, kind, EMPTY))
    if not events:
        return None
    return unit_level(events, steps, window=None, strict=strict)


def _session_path_levels(
    query: Query, params: FunnelParams, *, types: set[str], until: int
) -> tuple[dict[int, UnitLevel], dict[int, str]]:
    """Session levels without a window, one computation per distinct (kinds, ties) shape.

    Sessions that complete the funnel (their time to convert needs their times) and sessions
    with events outside `[period start, until)` are computed one by one from their offsets.
    """
    attribute = params.breakdown or "session_id"
    since = _micros(query.period.start)
    n = len(params.steps)
    memo: dict[tuple[str, str], UnitLevel | None] = {}
    levels: dict[int, UnitLevel] = {}
    groups: dict[int, str] = {}
    one_by_one = []
    for session_id, group, kinds, ties, first, last in _session_paths(query).values_list(
        "session_id", attribute, "kinds", "ties", "first_at_us", "last_at_us"
    ):
        groups[session_id] = group
        if first < since or last >= until:
            one_by_one.append(session_id)
            continue
        shape = (kinds, ties)
        if shape in memo:
            level = memo[shape]
        else:
            level = memo[shape] = _shape_level(
                kinds, ties, params.steps, types=types, strict=params.strict
            )
        if level is None:
            continue
        if level.level == n:
            one_by_one.append(session_id)
        else:
            levels[session_id] = level
    paths = SessionPath.objects.using(analytics_db())
    for i in range(0, len(one_by_one), PATH_CHUNK):
        for session_id, first, kinds, offsets in paths.filter(
            session_id__in=one_by_one[i : i + PATH_CHUNK]
        ).values_list("session_id", "first_at_us", "kinds", "offsets"):
            events = _path_events(
                first, kinds, offsets, types=types, strict=params.strict, since=since, until=until
            )
            if events:
                levels[session_id] = unit_level(
                    events, params.steps, window=None, strict=params.strict
                )
    return levels, groups
